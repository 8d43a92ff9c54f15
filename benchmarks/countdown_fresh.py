"""Score a trained Countdown model on freshly drawn held-out problems, with a checker of its own.

Shares no code with steiner's grader, answer extraction, solver or problem generator: problems are drawn
here (3 numbers, a target among the held-out target values, solvable by brute force written below),
completions come from plain `transformers` generation with the model's own chat template, the answer
is the text after ``<|reasoning_end|>``, and it is checked by evaluating it with exact fractions after
checking it uses only the given numbers. Only the list of held-out target values is read from steiner
(so that the targets really are unseen in training).

    .venv/bin/python benchmarks/countdown_fresh.py --model steiner-demo/rl_step --problems 200 --n 1
"""

from __future__ import annotations

import argparse
import ast
import itertools
import json
import random
import re
import time
from fractions import Fraction


def _values(nums: tuple[Fraction, ...]) -> set[Fraction]:
    """Every value reachable using all of ``nums`` (Countdown rules: whole, non-negative intermediates)."""
    if len(nums) == 1:
        return {nums[0]}
    out: set[Fraction] = set()
    for i, j in itertools.combinations(range(len(nums)), 2):
        a, b = max(nums[i], nums[j]), min(nums[i], nums[j])
        rest = tuple(nums[k] for k in range(len(nums)) if k not in (i, j))
        cands = [a + b, a - b, a * b] + ([a / b] if b and (a / b).denominator == 1 else [])
        for c in cands:
            out |= _values(rest + (c,))
    return out


def draw(n: int, seed: int, held_out: set[int], lo: int = 1, hi: int = 12) -> list[tuple[list[int], int]]:
    rng = random.Random(f"fresh:{seed}")
    out, seen = [], set()
    while len(out) < n:
        nums = [rng.randint(lo, hi) for _ in range(3)]
        targets = sorted(int(v) for v in _values(tuple(Fraction(x) for x in nums)) if v in held_out)
        if not targets:
            continue
        t = rng.choice(targets)
        if (tuple(nums), t) not in seen:
            seen.add((tuple(nums), t))
            out.append((nums, t))
    return out


def _eval(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return Fraction(node.value)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub | ast.Mult | ast.Div):
        a, b = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Add):
            return a + b
        if isinstance(node.op, ast.Sub):
            return a - b
        if isinstance(node.op, ast.Mult):
            return a * b
        if b == 0:
            raise ZeroDivisionError
        return a / b
    raise ValueError("not arithmetic")


def correct(answer: str | None, nums: list[int], target: int) -> bool:
    if not answer or not re.fullmatch(r"[\d\s+\-*/()]+", answer):
        return False
    pool = list(nums)
    for x in re.findall(r"\d+", answer):
        if int(x) not in pool:
            return False
        pool.remove(int(x))
    try:
        return _eval(ast.parse(answer, mode="eval")) == target
    except (SyntaxError, ValueError, ZeroDivisionError):
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--problems", type=int, default=200)
    ap.add_argument("--n", type=int, default=1, help="samples per problem (temperature 0.7 when > 1, else greedy)")
    ap.add_argument("--max-new-tokens", type=int, default=1200,
                    help="most new tokens per completion (the demo evaluates at 1,200: a full search is up to ~1,400)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=12345)
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from steiner.countdown.problems import held_out_targets  # the split only, not the grader

    # the tokenizer.json exactly as saved (AutoTokenizer would rebuild a qwen2 model's tokenizer as
    # Qwen2Tokenizer, splitting the demo's whole-number tokens into digits)
    tok = PreTrainedTokenizerFast.from_pretrained(args.model)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(args.model).eval()
    problems = draw(args.problems, args.seed, held_out_targets((10, 50)))
    prompts = [tok.apply_chat_template(
        [{"role": "user", "content": f"Using the numbers {', '.join(map(str, nums))}, make {t}. "
                                     "Use + - * / and each number at most once."}],
        tokenize=False, add_generation_prompt=True) for nums, t in problems]
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    right = 0
    jobs = [(i, k) for i in range(len(problems)) for k in range(args.n)]
    for s in range(0, len(jobs), args.batch_size):
        chunk = jobs[s:s + args.batch_size]
        enc = tok([prompts[i] for i, _ in chunk], return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=args.max_new_tokens, do_sample=args.n > 1, temperature=0.7,
                                 top_p=1.0, pad_token_id=tok.pad_token_id)
        for (i, _), row in zip(chunk, out, strict=True):
            text = tok.decode(row[enc["input_ids"].shape[1]:], skip_special_tokens=False)
            ans = text.split("<|reasoning_end|>", 1)[1].split("<|im_end|>")[0].strip() if "<|reasoning_end|>" in text else None
            right += correct(ans, *problems[i])
    print(json.dumps({"model": args.model, "problems": len(problems), "samples": args.n,
                      "pass@1": round(right / len(jobs), 4), "seconds": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()

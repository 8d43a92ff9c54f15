"""`steiner tokenizer extend`: add the 14 reasoning tokens to a tokenizer (and its model)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tokenizer",
        help="extend a tokenizer and model with the reasoning tokens",
        description="Tokenizer tools. `extend` adds the 14 reasoning tokens and the chat template to a "
        "save_pretrained folder (tokenizer, and model if present), initialising the new embedding rows "
        "from the mean of each token's descriptive words. The output reloads with plain transformers.",
    )
    tsub = p.add_subparsers(dest="tokenizer_command", metavar="ACTION", required=True)
    e = tsub.add_parser("extend", help="extend a save_pretrained folder", description=extend.__doc__)
    e.add_argument("--base", required=True, help="folder with the base tokenizer (and model)")
    e.add_argument("--out", required=True, help="folder to write the extended tokenizer (and model) to")
    e.add_argument("--tokenizer-only", action="store_true", help="do not load or write a model")
    e.set_defaults(func=extend)


def extend(args: argparse.Namespace) -> int:
    """Extend the tokenizer (and model) in --base with the reasoning tokens and write it to --out."""
    from rich.console import Console
    from rich.table import Table

    from steiner.tokenizer import extend_pretrained

    info = extend_pretrained(args.base, args.out, tokenizer_only=args.tokenizer_only)
    table = Table(title=f"reasoning tokens in {args.out}")
    table.add_column("token")
    table.add_column("id", justify="right")
    for tok, tid in info["token_ids"].items():
        table.add_row(tok, str(tid))
    console = Console()
    console.print(table)
    console.print(f"added {len(info['added_tokens'])} tokens; initialised {len(info['initialised_rows'])} rows; "
                  f"embedding rows {info['embedding_rows_before']} -> {info['embedding_rows']}")
    return 0

"""``mutransfer data prepare INPUT... --out FOLDER``: text, .jsonl or .parquet to token ids."""
from __future__ import annotations

import argparse

from mutransfer.cli._common import HelpFormatter, add_command


def register(subparsers) -> None:
    p = add_command(
        subparsers, "data",
        help="prepare your own data: text, .jsonl or .parquet to token ids",
        description="Your own data for [data] source = \"tokens\". `mutransfer data prepare` "
                    "tokenizes text files, .jsonl or .parquet into a folder of train.bin, val.bin "
                    "and meta.json.")
    actions = p.add_subparsers(title="actions", dest="action", metavar="ACTION")
    prep = actions.add_parser(
        "prepare", formatter_class=HelpFormatter,
        help="tokenize files into train.bin, val.bin and meta.json",
        description="Tokenize INPUTs (text files such as .txt/.py/.md, .jsonl or .parquet; files, "
                    "folders or globs) into --out: train.bin and val.bin (flat token ids, uint16 "
                    "under 65536 ids, else uint32) and meta.json (vocab_size, dtype, token counts, "
                    "tokenizer, sha256 of every source). A document goes to val.bin when the hash "
                    "of its path (and line or row) falls below --val-fraction. Nothing is "
                    "downloaded: use a local tokenizer, or train one with --train-tokenizer N.",
        epilog="example: mutransfer data prepare docs/ --out data/docs --train-tokenizer 4096, "
               "then [data] source = \"tokens\", path = \"data/docs\" in the experiment file")
    prep.add_argument("inputs", nargs="*", metavar="INPUT",
                      help="text, .jsonl or .parquet files, folders holding them, or globs "
                           "(quote them: 'docs/**/*.md')")
    prep.add_argument("--stdlib", action="store_true",
                      help="add the running Python's standard-library .py files (the text of the "
                           "default byte corpus, present everywhere: a first corpus to try)")
    prep.add_argument("--out", required=True, metavar="FOLDER",
                      help="the prepared folder to write (created if needed)")
    which = prep.add_mutually_exclusive_group(required=True)
    which.add_argument("--tokenizer", metavar="PATH_OR_NAME",
                       help="a tokenizer.json, or a transformers folder or name already in the "
                            "Hugging Face cache (never downloaded)")
    which.add_argument("--train-tokenizer", type=int, metavar="N",
                       help="train a byte-level BPE of N tokens on the inputs (e.g. 4096) and "
                            "save it as FOLDER/tokenizer.json")
    prep.add_argument("--text-field", default="text",
                      help="the field of .jsonl records and the column of .parquet files that "
                           "holds the text")
    prep.add_argument("--val-fraction", type=float, default=0.05,
                      help="the share of documents held out in val.bin")
    prep.add_argument("--quiet", action="store_true", help="no progress bars")
    prep.set_defaults(func=run_prepare)
    p.set_defaults(func=lambda args: _no_action(p))


def _no_action(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def run_prepare(args) -> int:
    from mutransfer.training.data import prepare_tokens, stdlib_files

    inputs = list(args.inputs) + ([str(f) for f in stdlib_files()] if args.stdlib else [])
    if not inputs:
        raise ValueError("nothing to tokenize: give INPUT files, folders or globs, or --stdlib")
    meta = prepare_tokens(inputs, args.out, args.tokenizer, train_tokenizer=args.train_tokenizer,
                          text_field=args.text_field, val_fraction=args.val_fraction,
                          progress=not args.quiet)
    print(summary(meta, args.out))
    return 0


def summary(meta: dict, out) -> str:
    """The lines ``mutransfer data prepare`` prints about a prepared folder's meta."""
    tok = meta["tokenizer"]
    name = tok.get("path") or tok.get("name")
    docs = meta["documents"]
    split = ("by document hash" if meta["split_by"] == "documents"
             else "the last tokens: no document hashed into val")
    return "\n".join([
        f"prepared {out}: {len(meta['sources'])} files, {docs['train'] + docs['val']} documents",
        f"  train.bin  {meta['train_tokens']:>12,} tokens",
        f"  val.bin    {meta['val_tokens']:>12,} tokens ({split})",
        f"  vocab_size {meta['vocab_size']} ({meta['dtype']}, max id {meta['max_id']}), "
        f"tokenizer {name}",
        f"use it with [data] source = \"tokens\", path = \"{out}\""])

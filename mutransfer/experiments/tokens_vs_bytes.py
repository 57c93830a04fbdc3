"""Does the proxy's eta* depend on the tokenizer? The zoo GPT at widths 32 and 64 on the standard
library's text, once as 512-token BPE ids and once as bytes, with everything else equal
(reports/tokens-vs-bytes). The runs are ``mutransfer validate`` (commands at the top of
``sweeps/tokens-bpe-300.toml`` and ``sweeps/tokens-bytes-300.toml``); this module writes the page:

    python -m mutransfer.experiments.tokens_vs_bytes write     # index.md and corpora.png
"""
from __future__ import annotations

from mutransfer.experiments._cli import out_folder, parser

VALIDATE = ("mutransfer validate sweeps/tokens-{}-300.toml --widths 32,64 --schemes spectral "
            "--optimizers adamw --lrs=-10:-3:0.5 --seeds 2")
PREPARE = "mutransfer data prepare --stdlib --train-tokenizer 512 --out reports/tokens-quickstart/data"


def main(argv=None) -> int:
    from pathlib import Path

    from mutransfer.validation import write_corpora_report

    args = parser("mutransfer.experiments.tokens_vs_bytes", __doc__, ("write",),
                  out="reports/tokens-vs-bytes").parse_args(argv)
    reports = Path(args.reports)
    corpora = {"BPE 512 (stdlib text)": reports / "tokens-bpe-300", "bytes (stdlib text)": reports / "tokens-bytes-300"}
    runs = {"BPE 512 (stdlib text)": f"{PREPARE} && {VALIDATE.format('bpe')}",
            "bytes (stdlib text)": VALIDATE.format("bytes")}
    print(f"wrote {write_corpora_report(out_folder(args), corpora, runs=runs)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

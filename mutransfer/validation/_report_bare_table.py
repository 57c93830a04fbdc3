"""The bare-table report (reports/bare-table/index.md): a bare positional table traced as a table
against version 0.2's silent shape guess, each plan tuned at the proxy and its best lr trained at
the target, drawn from the ``results.json`` the experiment stored (``python -m
mutransfer.experiments.bare_table``)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from mutransfer.validation._markdown import markdown_table, read_stored, write_markdown

BARE_TABLE_COMMAND = "python -m mutransfer.experiments.bare_table"
# The setup the experiment measured (its plans are in results.json's "plans"; the page names them).
BARE_TABLE_SETUP = """\
The zoo GPT (depth 2, pycorpus, {steps} steps of batch {batch} x {seq_len} bytes) with its positional embedding
turned into a bare ``(seq_len, width)`` Parameter, spectral + Muon, widths {proxy} -> {target}. Two plans,
each tuned and transferred the same way (the lr grid at the proxy, the best lr carried to the
target, trained there with {n_seeds} seeds):

- ``traced``: ``parametrize(make, width, base_width, optimizer="muon")``, today's default: no
  example given, so an input is built from the first Embedding and the table is traced as a table;
- ``shape guess``: what version 0.2 did silently, reproduced by switching off the built input
  (as 0.2 had none) with ``allow_shape_roles=True``: the table's role read from its shape alone, a
  2-D tensor whose dim 1 grows like a readout's weight, so a readout's init and lr."""


def _grid(done: dict, name: str) -> tuple[dict[float, float], float, list[int], list[float]]:
    """(proxy loss per log2 lr, the best log2 lr, the target's seeds, their losses) of plan ``name``."""
    proxy = {float(k.split("|")[2]): v for k, v in done.items() if k.startswith(f"{name}|proxy|")}
    if not proxy:
        raise ValueError(f"results.json has no proxy runs of plan {name!r} (keys '{name}|proxy|<log2 lr>'): "
                         f"run `{BARE_TABLE_COMMAND} run` to measure them")
    proxy = dict(sorted(proxy.items()))
    best = min(proxy, key=proxy.get)
    target = {int(k.split("|")[3]): v for k, v in done.items()
              if k.startswith(f"{name}|target|") and float(k.split("|")[2]) == best}
    return proxy, best, sorted(target), [target[s] for s in sorted(target)]


def write_bare_table_report(folder: str | Path, *, proxy: int = 32, target: int = 256, steps: int = 300,
                            batch: int = 16, seq_len: int = 64, command: str = BARE_TABLE_COMMAND) -> Path:
    """``folder/index.md`` from ``folder/results.json``: per plan the table's role, init std and
    lr multiplier at the target, the proxy's loss per lr, its best lr, and the target's loss per
    seed at that lr; the cost of the shape guess is the difference of the target means. The
    keywords are the settings the experiment ran with (results.json does not hold them).

        >>> write_bare_table_report("reports/bare-table")
        PosixPath('reports/bare-table/index.md')
    """
    out = Path(folder)
    done = read_stored(out, "results.json", f"{command} run --out {out}")
    rows, means, proxy_best = [], {}, {}
    for name, p in done["plans"].items():
        losses, best, seeds, at_target = _grid(done, name)
        lrs = list(losses)
        means[name], proxy_best[name] = sum(at_target) / len(at_target), min(losses.values())
        rows.append({"plan": name,
                     f"the table `pos` at width {target}": f"{p['role']} ({p['optimizer']}), init std "
                                                           f"{p['init_std']:.4f}, lr x {p['lr_mult']:g}",
                     "proxy loss per lr": " / ".join(f"{v:.3f}" for v in losses.values()),
                     "proxy's best lr": f"2^{best:g}",
                     "target eval loss (mean; seeds)": f"{means[name]:.4f} "
                                                       f"({', '.join(f'{v:.4f}' for v in at_target)})"})
    cost = means["shape guess"] - means["traced"]
    proxy_note = (f"On the proxy the shape guess's best loss is {proxy_best['shape guess']:.3f} against the traced "
                  f"{proxy_best['traced']:.3f}" + (": the guess looks as good or better where it is tuned, and "
                  "the cost only shows at the target, where the readout's rules shrink the table's init and lr "
                  "with width. " if proxy_best["shape guess"] <= proxy_best["traced"] else ". "))
    lines = [BARE_TABLE_SETUP.format(steps=steps, batch=batch, seq_len=seq_len, proxy=proxy, target=target,
                                     n_seeds=len(seeds)), "",
             f"Both plans are tuned alike: the lr grid 2^{lrs[0]:g}..2^{lrs[-1]:g} at width {proxy} (seed 0), "
             f"the best lr carried unchanged to width {target} (muP), trained there with seeds {seeds}; "
             f"{steps} steps of batch {batch} x {seq_len} bytes, spectral + Muon (the table on AdamW either way).",
             "", *markdown_table(pd.DataFrame(rows)), "",
             f"The shape guess costs {cost:+.3f} nat at the target against the traced role. " + proxy_note + "Today "
             "`parametrize` never takes it silently: without `example=` it builds token ids for the first "
             "Embedding and traces the table as a table; where no input can be built it raises a ValueError "
             "naming the parameter, both readings and the fix (`tests/test_examples.py`)."]
    return write_markdown(out / "index.md", "A bare positional table: the silent shape guess against the "
                          "traced role", f"{command} run", lines, cost="4.5 min on 2 cores, one torch thread")

"""What the silent guess cost, and what tracing without example= gives back (index.md), 4.5 min
on 2 cores, one torch thread; ``run`` is resumable (results.json in ``--out``, default
``reports/bare-table``), ``write`` rewrites index.md from results.json
(:func:`mutransfer.validation.write_bare_table_report`):

    python -m mutransfer.experiments.bare_table run

The zoo GPT (depth 2, pycorpus, 300 steps of batch 16 x 64 bytes) with its positional embedding
turned into a bare ``(seq_len, width)`` Parameter, spectral + Muon, widths 32 -> 256. Two plans,
each tuned and transferred the same way (the lr grid at the proxy, the best lr carried to the
target, trained there with 2 seeds):

- ``traced``: ``parametrize(make, width, base_width, optimizer="muon")``, today's default: no
  example given, so an input is built from the first Embedding and the table is traced as a table;
- ``shape guess``: what version 0.2 did silently, reproduced by switching off the built input
  (as 0.2 had none) with ``allow_shape_roles=True``: the table's role read from its shape alone, a
  2-D tensor whose dim 1 grows like a readout's weight, so a readout's init and lr.
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from unittest import mock

import torch
from torch import nn

import mutransfer
from mutransfer.models.zoo import GPT

from mutransfer.experiments._cli import out_folder, parse

OUT = "reports/bare-table"  # resolved against the current directory
MODULE = "python -m mutransfer.experiments.bare_table"
PROXY, TARGET, SEQ, STEPS, BATCH = 32, 256, 64, 300, 16
LOG2_LRS = (-7, -6, -5, -4, -3)
SEEDS = (0, 1)
PLANS = ("traced", "shape guess")


class BareTableGPT(GPT):
    """The zoo GPT with ``wpe`` a bare Parameter ``pos`` and no ``example_input``."""

    example_input = None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.wte(ids) + self.pos[: ids.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.readout(self.ln_f(x))


def make(width: int) -> nn.Module:
    model = mutransfer.zoo.gpt(width, depth=2, seq_len=SEQ)
    model.__class__ = BareTableGPT
    model.pos = nn.Parameter(model.wpe.weight.detach().clone())
    del model.wpe
    return model


def plan_of(name: str, width: int):
    """The plan; for ``shape guess`` with no input built from the model, as in version 0.2."""
    if name == "traced":
        return mutransfer.parametrize(make, width=width, base_width=PROXY, optimizer="muon")
    with mock.patch("mutransfer.core._examples.candidate_examples", lambda *a, **k: iter(())), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", mutransfer.RoleWarning)
        return mutransfer.parametrize(make, width=width, base_width=PROXY, optimizer="muon",
                                      allow_shape_roles=True)


def run(name: str, width: int, log2_lr: float, seed: int, data) -> float:
    torch.manual_seed(seed)
    plan = plan_of(name, width)
    res = mutransfer.train(plan.model, plan.optimizer(2.0 ** log2_lr), data, steps=STEPS, batch_size=BATCH,
                           seq_len=SEQ, warmup=0.1, device="cpu", seed=seed)
    return float(res.final_loss) if not res.diverged else math.inf


def measure(out: Path) -> dict:
    """Tune both plans at the proxy and train their best lr at the target (resumable JSON)."""
    data = mutransfer.data.pycorpus()
    path = out / "results.json"
    done = json.loads(path.read_text()) if path.exists() else {}
    for name in PLANS:
        plan = plan_of(name, TARGET)
        p = plan.params["pos"]
        done.setdefault("plans", {})[name] = {"role": p.role, "optimizer": p.optimizer, "init_std": p.init_std,
                                              "lr_mult": p.lr_mult, "traced_on": plan.traced_on}
        for x in LOG2_LRS:
            key = f"{name}|proxy|{x}"
            if key not in done:
                done[key] = run(name, PROXY, x, 0, data)
                path.write_text(json.dumps(done, indent=1))
        best = min(LOG2_LRS, key=lambda x: done[f"{name}|proxy|{x}"])
        for s in SEEDS:
            key = f"{name}|target|{best}|{s}"
            if key not in done:
                done[key] = run(name, TARGET, best, s, data)
                path.write_text(json.dumps(done, indent=1))
        print(name, "proxy best 2^", best, [done[f"{name}|target|{best}|{s}"] for s in SEEDS])
    path.write_text(json.dumps(done, indent=1))
    return done


def main(argv=None) -> int:
    """``python -m mutransfer.experiments.bare_table {run,write}``: ``run`` measures (resumable),
    both write index.md from results.json (:func:`mutransfer.validation.write_bare_table_report`)."""
    from mutransfer.validation import write_bare_table_report

    args = parse(MODULE.removeprefix("python -m "), __doc__, ("run", "write"), argv, out=OUT)
    out = out_folder(args)
    if args.what == "run":
        measure(out)
    path = write_bare_table_report(out, proxy=PROXY, target=TARGET, steps=STEPS, batch=BATCH, seq_len=SEQ,
                                   command=MODULE)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Reconcile the law's B_noise with the measured B_simple (issue 13, item 2): ``run`` measures
into results.json in ``--out`` (default ``reports/batch-noise``), reading the plan ``--config``
(default ``reports/gpt-cpu-batch/plan.json``); ``run`` and ``write`` then draw index.md and
noise.png from results.json (:func:`mutransfer.validation.write_batch_noise_report`):

    python -m mutransfer.experiments.batch_noise run
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mutransfer import projection as laws
from mutransfer.experiments._cli import out_folder, parse
from mutransfer.training import train
from mutransfer.training.teacher import LinearTeacher, simulate

OUT, PLAN = "reports/batch-noise", "reports/gpt-cpu-batch/plan.json"  # resolved against the cwd
MODULE = "python -m mutransfer.experiments.batch_noise"
DIM = 32
BATCHES = 2 ** np.arange(0, 11)


def eta_star(teacher, batches, steps, momentum, repeats, seed=0):
    """(R+1, n) log2 eta* per batch: a quadratic in log2 lr of the log loss after ``steps``."""
    centre = np.log2(teacher.eta_max(np.zeros(DIM)) * (1 - momentum))
    log2_lrs = centre + np.arange(-10, 2.01, 0.25)
    rng, E = np.random.default_rng(seed), []
    for b in batches:
        with np.errstate(all="ignore"):
            loss = np.log(simulate(teacher, 2 ** log2_lrs, int(b), steps, repeats=repeats,
                                   momentum=momentum, seed=seed + int(b)))
        x, y = np.repeat(log2_lrs, loss.shape[1]), loss.ravel()
        ok = np.isfinite(y)
        E.append(laws.quadratic_optimum(x[ok], y[ok], window=1.5, rng=rng).log2_lr)
    return np.stack(E, 1)


def law_fit(batches, E, c=1.0):
    out = laws.fit_laws(np.log2(np.asarray(batches, float) / c), E,
                        1 / np.maximum(E[1:].var(0), laws.VAR_FLOOR))
    theta = out["fits"]["sgd"]
    return {"law": out["law"], "support": out["support"][out["law"]],
            "b_noise_sgd": float(2 ** theta[0, 1]), "b_noise_sgd_ci": laws.interval(2 ** theta[1:, 1]),
            "eta_max_sgd": float(2 ** theta[0, 0])}


def one_step_and_horizon():
    rows = []
    for decay in (0.0, 1.0):
        t = LinearTeacher.make(DIM, decay=decay, noise=0.0)
        zero = np.zeros(DIM)
        for steps, momentum in ((1, 0.0), (100, 0.0), (100, 0.9)):
            E = eta_star(t, BATCHES, steps, momentum, repeats=64 if steps == 1 else 16)
            fit = law_fit(BATCHES, E)
            rows.append({"H": "I" if decay == 0 else "diag(1/i)", "steps": steps, "momentum": momentum,
                         "b_noise_exact_at_init": t.b_noise(zero), "b_simple_exact_at_init": t.b_simple(zero),
                         "c": laws.momentum_c(momentum), **fit, "eta_star": (2 ** E[0]).tolist()})
    return rows


def meter_spread(steps, decay, batch=64, accum=4, seeds=8):
    """b_simple from train()'s meter at a fixed point (lr ~ 0) over seeds, against the exact one."""
    t = LinearTeacher.make(DIM, decay=1.0, noise=0.1)
    values = []
    for s in range(seeds):
        model = nn.Linear(DIM, 1, bias=False)
        nn.init.zeros_(model.weight)
        res = train(model, torch.optim.SGD(model.parameters(), lr=1e-12), t, steps=steps,
                    batch_size=batch, seq_len=None, grad_accum=accum, clip=0.0, warmup=0,
                    schedule="constant", measure_noise=True, noise_decay=decay, device="cpu",
                    seed=s, eval_every=steps)
        values.append(res.noise["b_simple"])
    return {"steps": steps, "decay": decay, "exact": t.b_simple(np.zeros(DIM)), "values": values,
            "rel_sd": float(np.std(values) / t.b_simple(np.zeros(DIM)))}


def gpt_reconciliation(path: str | Path = PLAN):
    plan = json.loads(Path(path).read_text())
    c = plan["diagnostics"]["momentum_c"]
    note = next(w for w in plan["warnings"] if "B_simple" in w)
    b_simple = float(re.search(r"measured B_simple \(([0-9.e+]+)\)", note).group(1))
    lo, hi = plan["b_noise_interval"]
    return {"law": plan["law"], "b_noise_effective": plan["b_noise"], "interval_effective": [lo, hi],
            "c": c, "b_noise_raw": plan["b_noise"] * c, "interval_raw": [lo * c, hi * c],
            "b_simple": b_simple, "ratio_effective": plan["b_noise"] / b_simple,
            "ratio_raw": plan["b_noise"] * c / b_simple,
            "tokens_per_example": plan["diagnostics"]["tokens_per_example"]}


def measure(out: Path, plan: str | Path = PLAN) -> dict:
    """The teacher's fits, the meter's spread and the plan's reconciliation, stored in
    ``out/results.json`` (40 s on 2 cores, one torch thread)."""
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    rows = one_step_and_horizon()
    meters = [meter_spread(72, 0.98), meter_spread(2000, 0.999)]
    gpt = gpt_reconciliation(plan)
    results = {"teacher": rows, "meter": meters, "gpt": gpt, "seconds": time.perf_counter() - t0}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    for r in rows:
        print(f"H={r['H']:<10} steps={r['steps']:<4} beta={r['momentum']:<4} law={r['law']:<6} "
              f"fit sgd B_noise={r['b_noise_sgd']:.3g} {np.round(r['b_noise_sgd_ci'], 1).tolist()} "
              f"exact B_noise={r['b_noise_exact_at_init']:.3g} B_simple={r['b_simple_exact_at_init']:.3g} "
              f"c*B_noise={r['c'] * r['b_noise_exact_at_init']:.3g}")
    for m in meters:
        print(f"meter steps={m['steps']} decay={m['decay']}: exact {m['exact']:.3g}, "
              f"values {np.round(m['values'], 1).tolist()}, rel sd {m['rel_sd']:.2f}")
    print(json.dumps(gpt))
    print(f"{results['seconds']:.0f} s")
    return results


def main(argv=None) -> int:
    """``python -m mutransfer.experiments.batch_noise {run,write}``: ``run`` measures into
    results.json, both write index.md and noise.png from it
    (:func:`mutransfer.validation.write_batch_noise_report`)."""
    from mutransfer.validation import write_batch_noise_report

    args = parse(MODULE.removeprefix("python -m "), __doc__, ("run", "write"), argv, config=PLAN, out=OUT)
    out = out_folder(args)
    if args.what == "run":
        measure(out, Path(args.config))
    path = write_batch_noise_report(out, plan=args.config, dim=DIM, batches=BATCHES, command=MODULE)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

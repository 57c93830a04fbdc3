"""Reconcile the law's B_noise with the measured B_simple (issue 13, item 2); writes index.md's
tables (results.json) and noise.png in ``--out`` (default ``reports/batch-noise``), reading the
plan ``--config`` (default ``reports/gpt-cpu-batch/plan.json``):

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
    plan = json.loads(path.read_text())
    c = plan["diagnostics"]["momentum_c"]
    note = next(w for w in plan["warnings"] if "B_simple" in w)
    b_simple = float(re.search(r"measured B_simple \(([0-9.e+]+)\)", note).group(1))
    lo, hi = plan["b_noise_interval"]
    return {"law": plan["law"], "b_noise_effective": plan["b_noise"], "interval_effective": [lo, hi],
            "c": c, "b_noise_raw": plan["b_noise"] * c, "interval_raw": [lo * c, hi * c],
            "b_simple": b_simple, "ratio_effective": plan["b_noise"] / b_simple,
            "ratio_raw": plan["b_noise"] * c / b_simple,
            "tokens_per_example": plan["diagnostics"]["tokens_per_example"]}


def plot(rows, gpt, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, H in zip(axes[:2], ("I", "diag(1/i)")):
        for r in [r for r in rows if r["H"] == H]:
            eta = np.array(r["eta_star"]) / max(r["eta_star"])
            ax.plot(BATCHES, eta, "o-", label=f"{r['steps']} step(s), beta={r['momentum']}: "
                                               f"fit B_noise={r['b_noise_sgd']:.3g}")
        ref = rows[[r["H"] for r in rows].index(H)]
        ax.axvline(ref["b_noise_exact_at_init"], color="k", ls="--", label=f"exact B_noise {ref['b_noise_exact_at_init']:.3g}")
        ax.axvline(ref["b_simple_exact_at_init"], color="gray", ls=":", label=f"exact B_simple {ref['b_simple_exact_at_init']:.3g}")
        ax.set(xscale="log", yscale="log", xlabel="batch B (examples)", ylabel="eta*(B) / max",
               title=f"teacher-student, H = {H}, d = {DIM}")
        ax.legend(fontsize=7)
    ax = axes[2]
    names = ["law B_noise\n(effective B/c)", "law c*B_noise\n(raw batch)", "measured\nB_simple"]
    vals = [gpt["b_noise_effective"], gpt["b_noise_raw"], gpt["b_simple"]]
    err = [gpt["interval_effective"], gpt["interval_raw"], [gpt["b_simple"]] * 2]
    ax.bar(names, vals, color=["tab:red", "tab:blue", "tab:green"],
           yerr=np.abs(np.array(err).T - np.array(vals)), capsize=4)
    ax.set(yscale="log", ylabel="examples (sequences of 64 tokens)",
           title="gpt-cpu-batch proxies: the 30x is the momentum unit")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    args = parse(MODULE.removeprefix("python -m "), __doc__, ("run",), argv, config=PLAN, out=OUT)
    out = out_folder(args)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    rows = one_step_and_horizon()
    meters = [meter_spread(72, 0.98), meter_spread(2000, 0.999)]
    gpt = gpt_reconciliation(args.config)
    results = {"teacher": rows, "meter": meters, "gpt": gpt, "seconds": time.perf_counter() - t0}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    plot(rows, gpt, out / "noise.png")
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

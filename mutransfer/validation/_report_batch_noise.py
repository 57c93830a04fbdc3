"""The batch-noise report (reports/batch-noise/index.md and noise.png): why the eta*(B) law's
B_noise and the measured B_simple differed, from the ``results.json`` the experiment stored
(``python -m mutransfer.experiments.batch_noise``): the teacher-student fits ("teacher"), the
noise meter's spread ("meter") and the plan's reconciliation ("gpt")."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from mutransfer.validation._fig_noise import plot_noise
from mutransfer.validation._markdown import markdown_table, read_stored, write_markdown

BATCH_NOISE_COMMAND = "python -m mutransfer.experiments.batch_noise"
BATCH_NOISE_PLAN = "reports/gpt-cpu-batch/plan.json"
NOISE_PARTS = ("teacher", "meter", "gpt")


def _teacher_row(teacher: list[dict], H: str, steps: int, momentum: float) -> dict:
    for r in teacher:
        if r["H"] == H and r["steps"] == steps and r["momentum"] == momentum:
            return r
    raise ValueError(f"results.json's teacher has no fit for H = {H}, {steps} steps, momentum {momentum}: "
                     f"run `{BATCH_NOISE_COMMAND} run` to measure it")


def _meter_row(meter: list[dict], steps: int) -> dict:
    for m in meter:
        if m["steps"] == steps:
            return m
    raise ValueError(f"results.json's meter has no run of {steps} steps: run `{BATCH_NOISE_COMMAND} run`")


def write_batch_noise_report(folder: str | Path, *, plan: str | Path = BATCH_NOISE_PLAN, dim: int = 32,
                             batches=None, command: str = BATCH_NOISE_COMMAND) -> Path:
    """``folder/index.md`` and ``noise.png`` from ``folder/results.json``: the plan's law B_noise
    in effective (B / c) and raw units against its measured B_simple, the teacher's fitted bends
    of eta*(B) against the exact noise scales, and the meter's spread over seeds. ``plan`` is the
    plan the experiment read, ``dim`` the teacher's dimension and ``batches`` its batch grid
    (default 1, 2, 4, ...): settings results.json does not hold.

        >>> write_batch_noise_report("reports/batch-noise")
        PosixPath('reports/batch-noise/index.md')
    """
    out = Path(folder)
    done = read_stored(out, "results.json", f"{command} run --out {out}")
    missing = [k for k in NOISE_PARTS if k not in done]
    if missing:
        raise ValueError(f"{out / 'results.json'} lacks {missing}: rerun `{command} run --out {out}`")
    gpt, model = done["gpt"], Path(plan).parent
    plot_noise(done["teacher"], gpt, out / "noise.png", batches=batches, dim=dim, model=model.name)
    lines = [f"It reads `{plan}` (the last stop's plan) and runs a teacher-student linear regression "
             f"(`mutransfer.teacher`, d = {dim}, no label noise) where scaling.md section 6 is exact: "
             "L = (e^T H e + s^2)/2, G = H e, Sigma = G G^T + 2 L H, so", "",
             "    B_simple = tr(Sigma) / |G|^2          B_noise = tr(H Sigma) / (G^T H G)",
             "    one SGD step: eta*(B) = eta_max / (1 + B_noise / B),  eta_max = |G|^2 / (G^T H G)", "",
             f"Every number and the figure are read from `results.json`, which `{command} run` measures "
             f"({done.get('seconds', float('nan')):.0f} s on the 2-core CPU, under the shared lock) and "
             f"`{command} write` redraws.", "",
             "![noise scales](noise.png)", "",
             f"## What caused the {gpt['ratio_effective']:.0f}x ({model.as_posix()})", "",
             *markdown_table(_gpt_table(gpt)), "",
             *_causes(done["teacher"], done["meter"], gpt), "",
             *_decision(done["teacher"], gpt)]
    return write_markdown(out / "index.md", "Batch noise scales: why the law's B_noise and the measured "
                          f"B_simple differed {gpt['ratio_effective']:.0f}x", f"{command} run", lines)


def _gpt_table(gpt: dict) -> pd.DataFrame:
    c = gpt["c"]
    (lo, hi), (rlo, rhi) = gpt["interval_effective"], gpt["interval_raw"]
    rows = [(f"law ({gpt['law']}) B_noise, effective examples B / c", f"{gpt['b_noise_effective']:.0f}",
             f"[{lo:.0f}, {hi:.0f}]"),
            (f"c = (1 - beta1) / (1 + beta1), beta1 = {(1 - c) / (1 + c):.2g}", f"{c:.3g} (1/c = {1 / c:.0f})", ""),
            ("law's bend in raw batch units, c B_noise", f"{gpt['b_noise_raw']:.0f}", f"[{rlo:.0f}, {rhi:.0f}]"),
            ("measured B_simple at the proxies' loss", f"{gpt['b_simple']:.3g}", ""),
            ("ratio, effective units / raw units", f"{gpt['ratio_effective']:.0f}x / {gpt['ratio_raw']:.2g}x", "")]
    return pd.DataFrame(rows, columns=["", "value", "95% interval"])


def _causes(teacher: list[dict], meter: list[dict], gpt: dict) -> list[str]:
    """The numbered causes, every number read from the stored results."""
    c, raw, simple = gpt["c"], gpt["b_noise_raw"], gpt["b_simple"]
    rlo, rhi = gpt["interval_raw"]
    one_i, one_d = _teacher_row(teacher, "I", 1, 0.0), _teacher_row(teacher, "diag(1/i)", 1, 0.0)
    run_i, run_d = _teacher_row(teacher, "I", 100, 0.0), _teacher_row(teacher, "diag(1/i)", 100, 0.0)
    mom_i, mom_d = _teacher_row(teacher, "I", 100, 0.9), _teacher_row(teacher, "diag(1/i)", 100, 0.9)
    noise_d, simple_d = one_d["b_noise_exact_at_init"], one_d["b_simple_exact_at_init"]
    ci_lo, ci_hi = one_d["b_noise_sgd_ci"]
    fast, slow = _meter_row(meter, min(m["steps"] for m in meter)), _meter_row(meter, max(m["steps"] for m in meter))
    mean = {m["steps"]: sum(m["values"]) / len(m["values"]) for m in (fast, slow)}
    inside = "inside" if rlo <= simple <= rhi else "outside"
    return [
        "1. **Units: not sequences against tokens.** Both are in sequences: the law is fitted on",
        f"   `batch_size` (sequences of {gpt['tokens_per_example']:g} tokens) and `NoiseMeter` uses B_small = "
        "batch // grad_accum and",
        f"   B_big = batch (sequences). Tokens would have made a {gpt['tokens_per_example']:g}x gap.",
        f"2. **The momentum convention: {1 / c:.0f}x of the {gpt['ratio_effective']:.0f}x.** The law is fitted "
        "against B / c and reports",
        "   B_noise in those effective examples; B_simple is per raw example. Compared in the same raw",
        f"   units (c B_noise, the batch where eta*(B) bends) they are {raw:.0f} and {simple:.0f}, and "
        f"{simple:.0f} is {inside} the law's",
        f"   interval [{rlo:.0f}, {rhi:.0f}]. The old warning compared effective with raw units.",
        f"3. **H ~ I: about {noise_d / simple_d:.1f}x.** In the teacher with H = diag(1/i), B_simple = "
        f"{simple_d:.0f} while B_noise = {noise_d:.0f};",
        f"   one SGD step's eta*(B) bends at the exact B_noise (fit {one_d['b_noise_sgd']:.0f}, interval "
        f"[{ci_lo:.0f}, {ci_hi:.0f}]), not at B_simple.",
        f"   With H = I both are {one_i['b_noise_exact_at_init']:.0f} and the fit gives {one_i['b_noise_sgd']:.0f}.",
        "4. **The short horizon matters more than any of these.** After "
        f"{run_i['steps']} steps (H = I) the fitted bend",
        f"   stays at the exact {run_i['b_noise_exact_at_init']:.0f} (fit {run_i['b_noise_sgd']:.0f}), because "
        "B_noise is constant there. With H = diag(1/i) it moves",
        f"   to {run_d['b_noise_sgd']:.2g}, {noise_d / run_d['b_noise_sgd']:.0f}x below the B_noise at init: "
        "over a run, eta* is capped by stability at the top",
        "   curvature and the noise scale changes as the error concentrates in flat directions, so the law",
        "   fitted on final losses measures an effective noise scale of the whole run, not of one point.",
        "5. **Momentum does not act like a 1/c bigger batch over a run.** The one-step argument (the EMA",
        "   of gradients has c times the variance) ignores that the same noise enters about 1/(1 - beta)",
        f"   consecutive updates. With beta = {mom_i['momentum']:g} the bend moved from "
        f"{run_i['b_noise_sgd']:.0f} to {mom_i['b_noise_sgd']:.2g} (H = I; 1/c predicts "
        f"{mom_i['c'] * mom_i['b_noise_exact_at_init']:.2g} and",
        "   the eta* curve is erratic there, heavy-ball on one curvature has rate >= sqrt(beta)) and from",
        f"   {run_d['b_noise_sgd']:.2g} up to {mom_d['b_noise_sgd']:.0f} (H = diag(1/i); 1/c predicts a move down "
        f"by {1 / mom_d['c']:.0f}x). On the GPT the raw bend ({raw:.0f})",
        f"   matched B_simple ({simple:.0f}) without the 1/c.",
        "6. **No estimator bug.** At a fixed point, train()'s two-batch meter is unbiased: over "
        f"{slow['steps']} steps",
        f"   (EMA decay {slow['decay']:g}) {len(slow['values'])} seeds average {mean[slow['steps']]:.1f} against "
        f"the exact {slow['exact']:.0f} (relative sd {slow['rel_sd']:.2f}); at the GPT's",
        f"   setting ({fast['steps']} measured steps, decay {fast['decay']:g}) the relative sd is "
        f"{fast['rel_sd']:.2f} and the mean {mean[fast['steps']]:.1f}, "
        f"{100 * (1 - mean[fast['steps']] / fast['exact']):.0f}% low."]


def _decision(teacher: list[dict], gpt: dict) -> list[str]:
    """The decision the results led to, and where it is tested."""
    one_d = _teacher_row(teacher, "diag(1/i)", 1, 0.0)
    run_d = _teacher_row(teacher, "diag(1/i)", 100, 0.0)
    bias = one_d["b_noise_exact_at_init"] / one_d["b_simple_exact_at_init"]
    horizon = one_d["b_noise_exact_at_init"] / run_d["b_noise_sgd"]
    return [
        "## The decision (tested)", "",
        "- The **critical batch** (B_crit ~ B_noise, where the steps to a loss are 2 S_min) is the measured",
        "  B_simple against loss, read at the target's loss, in raw examples per step",
        "  (`TransferPlan.critical_batch`, with its bootstrap interval). It is direct, its interval is",
        "  narrow, and it is a property of the current point; its bias (B_simple against the true B_noise",
        f"  when H is not ~ I, {bias:.1f}x in the teacher) is smaller than the law's horizon effect ({horizon:.0f}x).",
        "- The law's B_noise stays in effective units for the lr (c cancels in eta*(B_target)); it is",
        "  compared with B_simple as c B_noise, with a warning beyond 4x, and it stands in for the critical",
        "  batch (as c B_noise) when the trials carry no noise statistics. Before this change that",
        f"  fallback recommended the effective-unit value as a batch ({gpt['b_noise_effective']:.0f} instead of "
        f"{gpt['b_noise_raw']:.0f} on the GPT).",
        "- With a token budget, `target_batch=\"auto\"` takes the **compute-optimal batch** instead: the",
        "  batch whose best-lr loss is lowest at that budget (where the loss is flat in B within the",
        "  bootstrap noise, the largest such batch).", "",
        "Tests: `tests/test_teacher.py` (closed forms against 200k sampled gradients; train()'s meter",
        "within 10% of the exact B_simple; the law fit recovers the exact B_noise of one SGD step, not",
        "B_simple), `tests/test_batch_plan.py` (the critical batch is B_simple; the law is compared in raw",
        "examples; the fallback is c B_noise), `tests/test_batch_ground_truth.py` (compute-optimal batch of",
        "muP students at a budget, proxies 16 and 32 against a direct sweep at 64; law identification).", "",
        "## Not done here", "",
        "The real-model check (issue 13 item 4: >= 6 batch sizes over >= 32x at a token budget, 2 seeds,",
        "proxies 32/64 against a direct batch x lr sweep at 256) needs about an hour of this CPU and is left",
        "for a later session; so is the CPU check of whether the optimal weight decay scales like B."]

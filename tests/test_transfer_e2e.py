"""End to end on CPU: sweep two proxy widths of the zoo MLP, transfer to 4x, and compare the
transferred lr with a direct lr grid at the target (issue 6)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mutransfer import load_config, sweep, transfer
from mutransfer.runs import run_trial

LOG2_LRS = [-11, -10, -9, -8, -7, -6, -5, -4, -3]
CONFIG = """
name = "e2e"
[model]
factory = "mutransfer.zoo:mlp"
width = 256
base_width = 32
kwargs = {{ depth = 3 }}
[data]
source = "synthetic"
kind = "classification"
[train]
steps = 60
batch_size = 32
warmup = 0.1
eval_batches = 4
[parametrization]
scheme = "mup"
optimizer = "adamw"
[sweep]
width = 32
trials = {trials}
sampler = "grid"
pruner = "none"
[sweep.space]
lr = {lrs}
"""


@pytest.mark.slow
def test_sweep_two_proxies_transfer_to_4x_matches_a_direct_grid(tmp_path):
    lrs = [2.0 ** k for k in LOG2_LRS]
    path = tmp_path / "e2e.toml"
    path.write_text(CONFIG.format(trials=len(lrs), lrs=lrs))
    cfg = load_config(path)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    studies = [sweep(cfg, width=w, storage=storage, show_progress=False, reports_dir=tmp_path)
               for w in (32, 64)]
    plan = transfer(studies, target_width=256)

    losses = []
    for lr in lrs:  # the same training at the target width, seeds averaged like the proxies'
        runs = [run_trial(cfg, {"lr": lr}, width=256, device="cpu", seed=s).final_loss for s in (0, 1)]
        losses.append(np.mean(runs))
    best = LOG2_LRS[int(np.nanargmin(losses))]
    assert abs(math.log2(plan.lr) - best) <= 1.0, (plan.summary(), dict(zip(LOG2_LRS, losses)))

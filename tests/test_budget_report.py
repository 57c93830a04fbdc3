"""The batch-at-a-budget report module end to end at toy sizes: proxy and direct sweeps through the
CLI, the plans, the weight-decay and Muon parts, then index.md, the CSVs and the figures."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

import mutransfer.experiments.batch_at_budget as budget
from mutransfer.validation import direct_plan_of, load_trials, study_names, write_budget_report
from mutransfer.cli import sweep as sweep_cmd
from mutransfer.cli import transfer as transfer_cmd
from tiny import run_command


def toy_toml(name: str, optimizer: str = "adamw") -> str:
    return "\n".join([
        f'name = "{name}"',
        "[model]", 'factory = "mutransfer.zoo:mlp"', "width = 32", "base_width = 8", "kwargs = { depth = 2 }",
        "[data]", 'source = "synthetic"', "in_dim = 8", "out_dim = 4",
        "[train]", "tokens = 384", "batch_size = 8", "grad_accum = 2", "measure_noise = true",
        "eval_batches = 2", "weight_decay = 0.0",
        "[parametrization]", 'scheme = "spectral"', f'optimizer = "{optimizer}"',
        "[sweep]", "width = 8", "trials = 9", 'sampler = "grid"', 'pruner = "none"', "seed = 0",
        "[sweep.space]", "lr = [0.00390625, 0.015625, 0.0625]", "batch_size = [4, 8, 16]", ""])


@pytest.fixture
def toy(tmp_path, monkeypatch):
    reports = tmp_path / "reports"
    adam, muon = tmp_path / "toy-budget.toml", tmp_path / "toy-budget-muon.toml"
    adam.write_text(toy_toml("toy-budget"))
    muon.write_text(toy_toml("toy-budget-muon", "muon"))
    for name, value in {"PROXY_WIDTHS": (8, 16), "SEEDS": (0, 7),
                        "TARGET_WIDTH": 32, "MUON_BATCHES": (4, 16), "DECAY_WIDTH": 8,
                        "DECAY_BATCHES": (4, 16), "DECAY_LOG2_WDS": (-4, -2, 0), "DECAY_SEEDS": (0,)}.items():
        monkeypatch.setattr(budget, name, value)
    return adam, muon, reports


def _sweep(config, width, seed, reports):
    assert run_command(sweep_cmd, "sweep", str(config), "--width", str(width), "--seed", str(seed),
                       "--reports", str(reports)) == 0


def test_parts_and_write(toy):
    adam, muon, reports = toy
    for w in (8, 16):
        for s in (0, 7):
            _sweep(adam, w, s, reports)
        _sweep(muon, w, 0, reports)
    _sweep(adam, 32, 0, reports)
    names = ",".join(study_names(budget.load_config(adam), (8, 16), (0, 7)))
    folder = reports / "toy-budget"
    assert run_command(transfer_cmd, "transfer", str(adam), "--studies", names, "--target-batch", "auto",
                       "--reports", str(reports)) == 0
    assert run_command(transfer_cmd, "transfer", str(adam), "--studies", "toy-budget-w32", "--target-batch",
                       "auto", "--out", str(folder / "plan-direct-w256.json"), "--reports", str(reports)) == 0
    write = dict(muon_config=muon, proxy_widths=(8, 16), seeds=(0, 7), target_width=32)
    assert "Not run" in write_budget_report(folder, adam, **write).read_text()  # decay, muon not yet

    args = ["--config", str(adam), "--muon-config", str(muon), "--reports", str(reports)]
    assert budget.main(["decay", *args]) == 0
    decay = pd.read_csv(folder / "decay.csv")
    assert len(decay) == 6 and set(decay.batch_size) == {4, 16}
    assert budget.main(["decay", *args]) == 0  # resumes: no rerun
    assert pd.read_csv(folder / "decay.csv").equals(decay)
    assert run_command(transfer_cmd, "transfer", str(muon), "--target-batch", "auto",
                       "--reports", str(reports)) == 0
    assert budget.main(["muon-direct", *args]) == 0
    assert len(pd.read_csv(folder / "muon-direct.csv")) == 6

    index = write_budget_report(folder, adam, **write).read_text()
    assert "Not run" not in index and "compute-optimal batch (B_opt at the budget)" in index
    for png in ("budget.png", "decay.png", "muon.png"):
        assert (folder / png).stat().st_size > 0 and f"]({png})" in index
    table = pd.read_csv(folder / "projection.csv")
    assert sorted(table.batch_size) == [4, 8, 16]
    assert np.allclose(table.off_octave, table.log2_lr_projected - table.log2_lr_measured)
    direct = json.loads((folder / "plan-direct-w256.json").read_text())
    measured = {o["batch_size"]: math.log2(o["lr"]) for o in direct["optima"]}
    assert np.allclose(table.set_index("batch_size").log2_lr_measured.to_dict()[8], measured[8])


def test_direct_plan_picks_the_flat_bottoms_largest_batch():
    """Loss flat from batch 4 to 16 and clearly worse at 64: B_opt lies between 16 and 64."""
    rows = []
    for b, floor in ((4, 2.0), (16, 2.0), (64, 2.5)):
        for x in (-8.0, -7.0, -6.0, -5.0):
            for seed in (0, 1):
                rows.append({"batch_size": b, "log2_lr": x, "seed": seed, "diverged": False,
                             "loss": floor + 0.1 * (x + 6.5) ** 2 + 0.001 * seed})
    plan = direct_plan_of(pd.DataFrame(rows), width=64)
    assert 16 <= plan["compute_optimal_batch"] < 64 and not plan["edge"]
    assert [round(math.log2(o["lr"]), 1) for o in plan["optima"]] == [-6.5, -6.5, -6.5]


def test_timescale_slope_is_one_when_lambda_eta_grows_like_b():
    opt = pd.DataFrame({"batch_size": [8, 32, 128], "log2_eta_wd": [-3.0, -1.0, 1.0]})
    from mutransfer.validation._report_budget import decay_slope

    assert decay_slope(opt) == pytest.approx(1.0)


def test_missing_studies_are_named(toy):
    adam, _, reports = toy
    with pytest.raises(ValueError, match=r"studies \['toy-budget-w8'\] are not in"):
        load_trials(budget.load_config(adam), ["toy-budget-w8"], reports)

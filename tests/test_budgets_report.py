"""The batch-across-budgets report module end to end at toy sizes: proxy sweeps at 3 budgets, the
direct runs at the target's budget, the B_opt(D) projection and index.md."""
from __future__ import annotations

import pandas as pd

import mutransfer.experiments.batch_across_budgets as budgets
from mutransfer.cli import sweep as sweep_cmd
from tiny import run_command


def toy_toml() -> str:
    return "\n".join([
        'name = "toy-budgets"',
        "[model]", 'factory = "mutransfer.zoo:mlp"', "width = 32", "base_width = 8", "kwargs = { depth = 2 }",
        "[data]", 'source = "synthetic"', "in_dim = 8", "out_dim = 4",
        "[train]", "tokens = 1536", "batch_size = 8", "grad_accum = 2", "measure_noise = true",
        "eval_batches = 2", "weight_decay = 0.0",
        "[parametrization]", 'scheme = "spectral"', 'optimizer = "adamw"',
        "[sweep]", "width = 8", "trials = 27", 'sampler = "grid"', 'pruner = "none"', "seed = 0",
        "[sweep.space]", "lr = [0.00390625, 0.015625, 0.0625]", "batch_size = [4, 8, 16]",
        "tokens = [192, 384, 768]", ""])


def test_sweeps_direct_runs_and_the_report(tmp_path, monkeypatch):
    config, reports = tmp_path / "toy-budgets.toml", tmp_path / "reports"
    config.write_text(toy_toml())
    monkeypatch.setattr(budgets, "SEEDS", (0, 7))
    monkeypatch.setattr(budgets, "DIRECT_BATCHES", (4, 8, 16))
    monkeypatch.setattr(budgets, "DIRECT_SEEDS", (0,))
    monkeypatch.setattr(budgets, "DIRECT_LRS_PER_BATCH", 3)
    for seed in (0, 7):
        assert run_command(sweep_cmd, "sweep", str(config), "--seed", str(seed), "--reports", str(reports)) == 0
    assert budgets.main(["direct", "--config", str(config), "--reports", str(reports)]) == 0
    folder = reports / "toy-budgets"
    assert len(pd.read_csv(folder / "direct.csv")) == 9
    proxy = pd.read_csv(folder / "direct-proxy.csv")  # the proxy's width at the target's budget
    assert len(proxy) == 9 and set(proxy.width) == {8}
    table = pd.read_csv(folder / "budgets.csv")
    assert list(table.budget) == [192, 384, 768] and table.b_opt.gt(0).all()
    text = (folder / "index.md").read_text()
    assert "B_opt ~ D^p, projected from 3 proxy budgets" in text and "which route matched" in text
    assert "python -m mutransfer.experiments.batch_across_budgets direct" in text
    assert "the proxy (width 8) measured at this budget" in text and "The same at the proxy's width 8" in text
    assert (folder / "budgets.png").stat().st_size > 5000


def test_widen_adds_the_next_grid_lr_beyond_an_edge_best_only():
    runs = pd.DataFrame({"batch_size": [2, 2, 4, 4, 4], "log2_lr": [-7.0, -6.0, -7.0, -6.0, -5.0],
                         "seed": 0, "loss": [1.0, 2.0, 2.0, 1.0, 3.0], "diverged": False})
    lrs = {2: [-7.0, -6.0], 4: [-7.0, -6.0, -5.0]}
    grid = [2.0 ** k for k in (-9, -8, -7, -6, -5)]
    assert budgets.widen(runs, lrs, grid)
    assert lrs == {2: [-8.0, -7.0, -6.0], 4: [-7.0, -6.0, -5.0]}  # batch 4's best is interior
    edge = {2: [-9.0, -8.0]}
    runs = runs.assign(log2_lr=[-9.0, -8.0, -7.0, -6.0, -5.0])
    assert not budgets.widen(runs, edge, grid) and edge == {2: [-9.0, -8.0]}  # nothing below -9


def test_direct_table_marks_the_best_lr_of_each_batch():
    runs = pd.DataFrame({"batch_size": [2, 2, 2, 2], "log2_lr": [-7.0, -7.0, -6.0, -6.0], "seed": [0, 1, 0, 1],
                         "loss": [1.0, 1.2, 1.5, 1.5], "diverged": [False, False, False, False]})
    from mutransfer.validation._report_budgets import direct_table

    table = direct_table(runs)
    assert list(table.columns) == ["batch", "2^-7", "2^-6"]
    assert table.iloc[0]["2^-7"] == "**1.1000**" and table.iloc[0]["2^-6"] == "1.5000"

"""The budget ladder end to end at toy sizes (issue 28): ``mutransfer sweep`` over ``[sweep]
budgets``, ``mutransfer transfer --target-tokens`` printing the lr and batch with intervals and the
batch menu (plan.json, plan.png), and the validation experiment's direct runs and report."""
from __future__ import annotations

import pandas as pd

import mutransfer.experiments.budget_ladder as ladder_exp
from mutransfer import TransferPlan
from mutransfer.cli import sweep as sweep_cmd
from mutransfer.cli import transfer as transfer_cmd
from tiny import run_command


def toy_toml() -> str:
    return "\n".join([
        'name = "toy-ladder"',
        "[model]", 'factory = "mutransfer.zoo:mlp"', "width = 32", "base_width = 8", "kwargs = { depth = 2 }",
        "[data]", 'source = "synthetic"', "in_dim = 8", "out_dim = 4",
        "[train]", "tokens = 3072", "batch_size = 8", "eval_batches = 2", "weight_decay = 0.0",
        "[parametrization]", 'scheme = "spectral"', 'optimizer = "adamw"',
        "[sweep]", "width = 8", "trials = 48", 'sampler = "grid"', 'pruner = "none"', "seed = 0",
        "budgets = [192, 384, 768]",
        "[sweep.space]", "lr = [0.00390625, 0.015625, 0.0625, 0.25]", "batch_size = [4, 8, 16, 32]", ""])


def test_a_ladder_sweeps_transfers_to_a_budget_and_is_validated(tmp_path, monkeypatch, capsys):
    config, reports = tmp_path / "toy-ladder.toml", tmp_path / "reports"
    config.write_text(toy_toml())
    for seed in (0, 1000):
        assert run_command(sweep_cmd, "sweep", str(config), "--seed", str(seed), "--reports", str(reports)) == 0
    out = capsys.readouterr().out
    assert "budget ladder at width 8: budgets 192, 384, 768 tokens" in out and "runs of the target" in out
    plan_path = tmp_path / "plan.json"
    assert run_command(transfer_cmd, "transfer", str(config), "--target-tokens", "3072", "--reports", str(reports),
                       "--out", str(plan_path)) == 0
    out = capsys.readouterr().out
    assert "batch menu at " in out and "B_eps ~ D^k" in out and "eta* ~ D^x" in out
    plan = TransferPlan.from_json(plan_path.read_text())
    assert plan.batch_source in ("law", "measured") and plan.batch_menu and len(plan.ladder) == 3
    assert plan.compute["ladder_flops"] > 0 and plan.compute["target_run_flops"] > 0
    assert "--target-tokens 3072" in plan.diagnostics["command"]
    assert (tmp_path / "plan.png").stat().st_size > 5000

    monkeypatch.setattr(ladder_exp, "DIRECT_BATCHES", (4, 16))
    monkeypatch.setattr(ladder_exp, "DIRECT_LRS", 3)
    folder = tmp_path / "ladder-report"
    argv = ["--config", str(config), "--reports", str(reports), "--out", str(folder)]
    assert ladder_exp.main(["direct", *argv]) == 0
    runs = pd.read_csv(folder / "toy-ladder" / "direct.csv")
    assert set(runs.seed) == {0, 1} and {4, 16} <= set(runs.batch_size) and len(runs) >= 2 * 2 * 3
    assert ladder_exp.main(["write", "--configs", str(config), "--reports", str(reports), "--out", str(folder)]) == 0
    text = (folder / "index.md").read_text()
    assert "## Regret at the target" in text and "today's regret" in text and "## Tuning compute" in text
    assert "python -m mutransfer.experiments.budget_ladder direct --config" in text
    assert (folder / "menus.png").stat().st_size > 5000
    assert ladder_exp.main(["direct", *argv]) == 0  # resumes: nothing left to run
    assert len(pd.read_csv(folder / "toy-ladder" / "direct.csv")) == len(runs)

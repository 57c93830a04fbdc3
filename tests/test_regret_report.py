"""The regret report module end to end on a toy: a validate study, the transfer from the proxy's
landscape, the target runs at the transferred lr, and the table."""
from __future__ import annotations

import math

import pandas as pd

import mutransfer.experiments.regret as regret
from mutransfer.validation import validate


def test_regret_is_measured_by_training_the_target_at_the_transferred_lr(tmp_path, monkeypatch):
    config = tmp_path / "toy.toml"
    config.write_text("\n".join([
        'name = "toy-regret"', "[model]", 'factory = "mutransfer.zoo:mlp"', "width = 32", "base_width = 8",
        "[data]", 'source = "synthetic"', "in_dim = 8", "out_dim = 4",
        "[train]", "steps = 12", "batch_size = 8", "eval_batches = 2",
        "[parametrization]", 'scheme = "spectral"',
        "[sweep]", "width = 8", "trials = 3", 'sampler = "grid"', 'pruner = "none"',
        "[sweep.space]", "lr = [0.004, 0.016, 0.064]", ""]))
    reports = tmp_path / "reports"
    validate(str(config), widths=[8, 32], schemes=["spectral"], optimizers=["adamw"],
             log2_lrs=[-9, -8, -7, -6, -5, -4, -3], seeds=2, device="cpu", reports_dir=reports, show_progress=False)
    monkeypatch.setattr(regret, "CASES", (regret.Case("toy MLP", "adamw", str(config), proxy=8, target=32),))
    assert regret.main(["run", "--reports", str(reports)]) == 0
    runs = pd.read_csv(reports / "regret" / "targets.csv")
    assert set(runs.seed) == {0, 1} and set(runs.which) <= {"recommended", "eta*"}
    table = pd.read_csv(reports / "regret" / "regret.csv")
    row = table.iloc[0]
    assert math.isclose(row.regret_recommended, 100 * (row.loss_recommended - row.best_loss) / row.best_loss)
    assert "Regret = (the target's mean loss" in (reports / "regret" / "index.md").read_text()
    assert row.why.startswith("the target's best grid lr lies ") and row.widths == "8 -> 32"


def test_why_names_the_gap_and_the_rise_on_the_side_of_the_transferred_lr():
    curve = pd.Series({-8.0: 2.1, -7.0: 2.0, -6.0: 2.3})
    assert regret.why(curve, -6.4) == ("the target's best grid lr lies 0.60 octave below; one step above "
                                        "its best the loss is 15.0% higher")
    assert regret.why(curve, -7.4).endswith("0.40 octave above; one step below its best the loss is 5.0% higher")
    assert regret.why(curve.drop(-6.0), -6.4).endswith("at the grid's edge")

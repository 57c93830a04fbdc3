"""The regret report module end to end on a toy: a validate study, the transfer from the proxy's
landscape, the target runs at the transferred lr, and the table."""
from __future__ import annotations

import math

import pandas as pd
import pytest

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
    monkeypatch.setattr(regret, "CASES", (regret.Case("toy MLP", "adamw", "toy.toml", proxy=8, target=32),))
    out = tmp_path / "elsewhere"
    assert regret.main(["run", "--reports", str(reports), "--config", str(tmp_path), "--out", str(out)]) == 0
    assert not (reports / "regret").exists()  # --out, not <reports>/regret
    runs = pd.read_csv(out / "targets.csv")
    assert set(runs.seed) == {0, 1} and set(runs.which) <= {"recommended", "eta*"}
    table = pd.read_csv(out / "regret.csv")
    row = table.iloc[0]
    assert math.isclose(row.regret_recommended, 100 * (row.loss_recommended - row.best_loss) / row.best_loss)
    assert "Regret = (the target's mean loss" in (out / "index.md").read_text()
    assert row.why.startswith("the target's best grid lr lies ") and row.widths == "8 -> 32"


def test_why_names_the_gap_and_the_rise_on_the_side_of_the_transferred_lr():
    curve = pd.Series({-8.0: 2.1, -7.0: 2.0, -6.0: 2.3})
    assert regret.why(curve, -6.4) == ("the target's best grid lr lies 0.60 octave below; one step above "
                                        "its best the loss is 15.0% higher")
    assert regret.why(curve, -7.4).endswith("0.40 octave above; one step below its best the loss is 5.0% higher")
    assert regret.why(curve.drop(-6.0), -6.4).endswith("at the grid's edge")


def test_the_report_is_written_from_the_stored_table_alone(tmp_path):
    from mutransfer.validation import REGRET_COLUMNS, write_regret_report

    row = {"model": "toy", "optimizer": "adamw", "widths": "8 -> 32", "lr": 2.0 ** -6, "eta_star": 2.0 ** -6.5,
           "best_log2_lr": -6.0, "best_loss": 2.0, "loss_recommended": 2.04, "regret_recommended": 2.0,
           "regret_eta*": 0.5, "why": "the target's best grid lr lies 0.00 octave above"}
    pd.DataFrame([row], columns=REGRET_COLUMNS).to_csv(tmp_path / "regret.csv", index=False)
    text = write_regret_report(tmp_path, command="python -m x").read_text()
    assert text.startswith("# Regret at 8x") and "Regenerate: `python -m x run`" in text
    assert "| toy | adamw | 8 -> 32 | 2^-6.00 / 2^-6.50 |" in text and "| 2.00% | **no** |" in text
    with pytest.raises(ValueError, match="no .*nowhere/regret.csv: run"):
        write_regret_report(tmp_path / "nowhere")

"""The headline comparison (mutransfer compare): three arms, the target's loss and tuning compute."""
from __future__ import annotations

from pathlib import Path

import pytest

from mutransfer.validation._compare import (arm_config, compare, meets_goal, read_compare, compare_verdict,
                                            write_compare)
from mutransfer.runs import load_config
from tiny import run_command

ROOT = Path(__file__).resolve().parents[1]
MLP = ROOT / "sweeps" / "mlp-synthetic.toml"
GRID = [0.003, 0.01, 0.03, 0.1]
STAGED = {"sweep.width": 16, "model.width": 64, "model.base_width": 8, "train.steps": 12,
          "train.eval_every": 4, "train.eval_batches": 1, "model.kwargs": {"depth": 2},
          "sweep.sampler": "tpe", "sweep.pruner": "none", "sweep.recipe": "staged", "sweep.trials": 10,
          "sweep.space": {"lr": GRID, "lr_output": {"low": 0.25, "high": 4.0, "log": True}}}


def test_arm_configs():
    cfg = load_config(MLP, STAGED)
    sp = arm_config(cfg, "sp-direct")
    assert (sp.parametrization.scheme, sp.sweep.width, sp.sweep.space, sp.sweep.trials) == ("sp", 64, {"lr": GRID}, 4)
    lr = arm_config(cfg, "transfer-lr")
    assert (lr.parametrization.scheme, lr.sweep.width, lr.sweep.recipe) == ("mup", 16, "single")
    assert arm_config(cfg, "transfer-constants") is cfg
    single = cfg.override({"sweep.recipe": "single"})
    with pytest.raises(ValueError, match="needs recipe = \"staged\""):
        arm_config(single, "transfer-constants")


def test_compare_runs_three_arms_and_writes_its_report(tmp_path):
    cfg = load_config(MLP, {**STAGED, "sweep.storage": f"sqlite:///{tmp_path}/c.db"})
    table = compare(cfg, seeds=2, device="cpu", reports_dir=tmp_path, show=False)
    assert list(table["arm"]) == ["sp-direct", "transfer-lr", "transfer-constants"]
    assert list(table["trials"]) == [4, 4, 10]
    assert table["compute_ratio"].iloc[0] == 1.0 and (table["tuning_s"] > 0).all()
    # FLOPs: the same tokens per trial, so the ratio is trials x parameters
    from mutransfer.validation._compare import n_params
    p16, p64 = n_params(cfg, 16), n_params(cfg, 64)
    assert table["compute_ratio"].tolist() == pytest.approx([1.0, p16 / p64, 10 * p16 / (4 * p64)])
    assert all(len(v) == 2 for v in table["seed_losses"])
    assert table["loss"].tolist() == pytest.approx([sum(v) / 2 for v in table["seed_losses"]])
    level, cheap = meets_goal(table)
    assert level == (table["loss"].iloc[2] <= table["loss"].iloc[0]) and cheap == (table["compute_ratio"].iloc[2] <= 0.125)
    assert compare_verdict(table).startswith("transfer-constants (mup): target loss ")
    path = write_compare(table, tmp_path / "out", "mutransfer compare x.toml")
    back = read_compare(tmp_path / "out" / "compare.csv")
    assert back["seed_losses"].tolist() == table["seed_losses"].tolist()
    assert back["constants"].tolist() == table["constants"].tolist()
    assert (tmp_path / "out" / "compare.png").stat().st_size > 5000
    assert "Regenerate: `mutransfer compare x.toml`" in path.read_text()
    again = compare(cfg, seeds=2, device="cpu", reports_dir=tmp_path, show=False)  # resumes: no new trials
    assert list(again["trials"]) == [4, 4, 10] and again["loss"].tolist() == table["loss"].tolist()


def test_reuse_tunes_two_arms_from_runs_the_path_already_made(tmp_path):
    """--reuse: transfer-lr is the staged sweep's lr phase, sp-direct is validate's SP landscape at
    the target width; no new study is created for either."""
    import math

    import optuna

    from mutransfer.validation import validate

    url = f"sqlite:///{tmp_path}/c.db"
    cfg = load_config(MLP, {**STAGED, "sweep.storage": url})
    with pytest.raises(ValueError, match=r"lacks SP at width 64 .*mutransfer validate CONFIG --widths 16,64 --schemes sp"):
        compare(cfg, seeds=1, device="cpu", reports_dir=tmp_path, show=False, reuse=True)
    validate(cfg, widths=[16, 64], schemes=["sp"], optimizers=["adamw"],
             log2_lrs=[math.log2(lr) for lr in GRID], seeds=1, device="cpu", reports_dir=tmp_path,
             show_progress=False)
    table = compare(cfg, seeds=1, device="cpu", reports_dir=tmp_path, show=False, reuse=True)
    assert list(table["trials"]) == [4, 4, 10]
    assert list(table["tuned_from"]) == ["validate's SP landscape", "mlp-synthetic-w16, lr phase",
                                         "mlp-synthetic-w16"]
    names = {s.study_name for s in optuna.get_all_study_summaries(url)}
    assert names == {"mlp-synthetic-w16", "mlp-synthetic-validate"}
    study = optuna.load_study(study_name="mlp-synthetic-w16", storage=url)
    phase = sorted(t.params["lr"] for t in study.trials if t.user_attrs["stage"] == "lr")
    assert phase == GRID
    from mutransfer.validation._compare import n_params
    assert table["compute_ratio"].tolist() == pytest.approx(
        [1.0, n_params(cfg, 16) / n_params(cfg, 64), 10 * n_params(cfg, 16) / (4 * n_params(cfg, 64))])


def test_compare_command_help_and_bad_seeds(tmp_path, capsys):
    from mutransfer.cli import compare as compare_cmd

    with pytest.raises(SystemExit) as e:
        run_command(compare_cmd, "compare", "--help")
    assert e.value.code == 0 and "sp-direct" in capsys.readouterr().out
    with pytest.raises(ValueError, match="seeds must be a positive int"):
        compare(load_config(MLP, STAGED), seeds=0)


def test_another_scheme_gets_its_own_transfer_studies(tmp_path):
    cfg = load_config(MLP, {**STAGED, "sweep.storage": f"sqlite:///{tmp_path}/c.db"})
    table = compare(cfg, seeds=1, scheme="spectral", device="cpu", reports_dir=tmp_path, show=False)
    assert list(table["scheme"]) == ["sp", "spectral", "spectral"]
    import optuna
    names = {s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{tmp_path}/c.db")}
    assert names == {"mlp-synthetic-compare-sp-sp-direct-w64", "mlp-synthetic-compare-spectral-transfer-lr-w16",
                     "mlp-synthetic-compare-spectral-transfer-constants-w16"}


@pytest.mark.parametrize("losses, ratio, part", [((2.0, 1.9), 0.1, "is met."), ((2.0, 1.9), 0.3, "met for the loss, missed for the compute."),
                                                  ((2.0, 2.1), 0.1, "missed for the loss, met for the compute."), ((2.0, 2.1), 0.3, "is missed.")])
def test_the_verdict_names_which_part_of_the_goal_is_met(losses, ratio, part):
    import pandas as pd

    table = pd.DataFrame({"arm": ["sp-direct", "transfer-constants"], "scheme": ["sp", "spectral"],
                          "loss": list(losses), "compute_ratio": [1.0, ratio]})
    assert compare_verdict(table).endswith(part) and "(spectral)" in compare_verdict(table)

"""Per-role exponents: the slope of each role's optimum multiplier against width."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mutransfer.runs import load_config
from mutransfer.validation._exponents import (exponent_table, role_runs, table_exponent,
                                              write_exponents)

MLP = Path(__file__).resolve().parents[1] / "sweeps" / "mlp-synthetic.toml"


def synthetic_runs(slopes: dict[str, float]) -> pd.DataFrame:
    """Parabolic losses whose optimum log2 c* = 0.5 + slope * log2(width / 32), two seeds."""
    rows = []
    for role, s in slopes.items():
        for w in (32, 64, 128, 256):
            best = 0.5 + s * np.log2(w / 32)
            for x in np.arange(-3.0, 3.5, 0.5):
                for seed in (0, 1):
                    rows.append({"kind": "lr", "role": role, "width": w, "log2_mult": float(x),
                                 "seed": seed, "loss": 2.0 + 0.1 * (x - best) ** 2 + 0.001 * seed,
                                 "diverged": False})
    return pd.DataFrame(rows)


def test_the_measured_exponent_is_the_table_plus_the_optimum_slope():
    table = exponent_table(synthetic_runs({"hidden": 0.0, "output": 0.5}), optimizer="adamw").set_index("role")
    assert table.loc["hidden", "table"] == -1.0 and table.loc["output", "table"] == -1.0
    assert table.loc["hidden", "slope"] == pytest.approx(0.0, abs=1e-6)
    assert table.loc["output", "slope"] == pytest.approx(0.5, abs=1e-6)
    assert table.loc["output", "measured"] == pytest.approx(-0.5, abs=1e-6)
    assert bool(table.loc["hidden", "agrees"]) and not bool(table.loc["output", "agrees"])


@pytest.mark.parametrize("args, expected", [
    (("lr", "hidden", "adamw"), -1.0), (("lr", "input", "sgd"), 1.0), (("lr", "hidden", "muon"), 0.0),
    (("init", "hidden", "adamw"), -0.5), (("init", "output", "adamw", -0.5), -0.5),
    (("lr", "output", "adamw", -1.0, "sp"), 0.0)])
def test_table_exponents_follow_scaling_md(args, expected):
    assert table_exponent(*args) == expected


def test_role_runs_train_resume_and_write(tmp_path):
    cfg = load_config(MLP, {"sweep.width": 16, "model.base_width": 8, "train.steps": 8,
                            "train.eval_batches": 1, "model.kwargs": {"depth": 2}})
    cache = tmp_path / "runs.csv"
    df = role_runs(cfg, widths=[16, 32, 64], roles=["output"], log2_mults=[-1, 0, 1], device="cpu",
                   cache=cache, show=False)
    assert len(df) == 9 and df["loss"].notna().all()
    again = role_runs(cfg, widths=[16, 32, 64], roles=["output"], log2_mults=[-1, 0, 1], device="cpu",
                      cache=cache, show=False)
    assert again["loss"].tolist() == df["loss"].tolist()  # read back, not retrained
    table = exponent_table(df, optimizer="adamw")
    path = write_exponents(df, table, tmp_path, "mutransfer exponents x.toml")
    assert (tmp_path / "exponents.png").stat().st_size > 5000 and "| output |" in path.read_text()


@pytest.mark.parametrize("kwargs, message", [
    ({"widths": [16, 32]}, ">= 3 widths"), ({"roles": ["readout"]}, "roles must be among"),
    ({"log2_mults": [0, 1]}, ">= 3 multipliers"), ({"kind": "eps"}, "kind must be one of")])
def test_bad_exponent_arguments(kwargs, message):
    args = {"widths": [16, 32, 64], "roles": ["output"], "log2_mults": [-1, 0, 1], **kwargs}
    with pytest.raises(ValueError, match=message):
        role_runs(load_config(MLP), **args)


def test_a_plan_fixes_the_lr_and_constants_the_roles_are_measured_around(tmp_path):
    from mutransfer.cli.exponents import tuned_config
    from mutransfer.runs import config_constants
    from mutransfer.projection._transfer_plan import TransferPlan

    plan = TransferPlan(lr=0.0125, lr_interval=(0.01, 0.02), batch_size=16, target_width=256,
                        constants={"init_input": 9.0, "output_mult": 2.5})
    (tmp_path / "plan.json").write_text(plan.to_json())
    cfg = tuned_config(load_config(MLP), tmp_path / "plan.json")
    assert cfg.train.lr == 0.0125 and cfg.sweep.space == {"lr": [0.0125]}
    c = config_constants(cfg)
    assert (c["init_input"], c["output_mult"], c["lr_hidden"]) == (9.0, 2.5, 1.0)

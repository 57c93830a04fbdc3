"""Validation: the landscape math on synthetic curves with known eta*, then the validate
command on a tiny MLP grid (CSV, figure, tables, resume, --check)."""
from __future__ import annotations

import argparse
import math

import numpy as np
import optuna
import pandas as pd
import pytest

from mutransfer.cli import validate as validate_cmd
from mutransfer.runs import load_config
from mutransfer.validation._landscape import (check_runs, curve_means, drift, drift_slope,
                                              eta_stars, fit_curve, loss_at, summarize)
from mutransfer.validation._validate import command_line, make_grid, validate
from tiny import run_command, write_tiny_mlp

GRID = np.arange(-16.0, -4.99, 0.5)
WIDTHS = (64, 128, 256, 512)


def parabolas(drifts: dict, *, seeds=(0, 1), noise=0.0, curvature=0.05, floor=3.0, at64=-9.0,
              rng_seed=0) -> pd.DataFrame:
    """Runs whose loss is floor + curvature (log2 lr - m_w)^2 with m_w = at64 + d log2(w/64)."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for (scheme, opt), d in drifts.items():
        for w in WIDTHS:
            m = at64 + d * math.log2(w / 64)
            for x in GRID:
                for s in seeds:
                    loss = floor + curvature * (x - m) ** 2 + rng.normal(0, noise)
                    rows.append({"scheme": scheme, "optimizer": opt, "width": w, "log2_lr": x,
                                 "seed": s, "loss": loss, "diverged": False})
    return pd.DataFrame(rows)


def test_eta_star_and_drift_recover_known_minima():
    df = parabolas({("mup", "adamw"): 0.0, ("sp", "adamw"): -1.0, ("mup", "muon"): 0.3},
                   noise=0.003)
    etas = eta_stars(df)
    for (scheme, opt), d in {("mup", "adamw"): 0.0, ("sp", "adamw"): -1.0, ("mup", "muon"): 0.3}.items():
        g = etas[(etas.scheme == scheme) & (etas.optimizer == opt)].sort_values("width")
        truth = -9.0 + d * np.log2(g["width"] / 64)
        assert np.allclose(g["log2_eta"], truth, atol=0.1), (scheme, opt, g["log2_eta"].tolist())
        assert (g["log2_eta_lo"] <= g["log2_eta"]).all() and (g["log2_eta"] <= g["log2_eta_hi"]).all()
        slope, lo, hi = drift(df[(df.scheme == scheme) & (df.optimizer == opt)])
        assert slope == pytest.approx(d, abs=0.03)
        assert lo - 0.02 <= d <= hi + 0.02, "the interval covers the true drift"
        assert hi - lo < 0.2


def test_regret_is_the_loss_at_the_transferred_lr_against_the_grid_best():
    # Noise-free parabolas whose minima sit on grid points: the regret is known in closed form.
    df = parabolas({("sp", "adamw"): -1.0, ("mup", "adamw"): 0.0}, seeds=(0,))
    table = summarize(df).set_index("scheme")
    # SP: eta* moves from -9 at 64 to -12 at 512; the loss at -9 there is 3 + 0.05 * 3^2.
    assert table.loc["sp", "transferred_log2_lr"] == pytest.approx(-9.0, abs=1e-6)
    assert table.loc["sp", "regret_pct"] == pytest.approx(100 * 0.45 / 3.0, rel=1e-6)
    assert table.loc["mup", "regret_pct"] == pytest.approx(0.0, abs=1e-6)
    assert table.loc["mup", "meets_target"] == True  # noqa: E712 (numpy/pandas bools)
    assert table.loc["sp", "meets_target"] is None, "SP is the reference, it claims nothing"
    assert "TARGET MISSED" not in table.loc["mup", "verdict"]


def test_regret_between_grid_points_interpolates_the_measured_curve():
    df = parabolas({("mup", "adamw"): 0.0}, seeds=(0,), at64=-9.25)  # minima between grid points
    r = summarize(df).iloc[0]
    assert r["transferred_log2_lr"] == pytest.approx(-9.25, abs=0.02)
    curve = curve_means(df[df.width == 512])
    expected = loss_at(curve["log2_lr"], curve["loss"], r["transferred_log2_lr"])
    assert r["loss_at_transferred"] == pytest.approx(expected)
    assert 0 <= r["regret_pct"] < 0.2, "a chord over a convex curve: small and never negative"


def test_a_drifting_mup_landscape_is_reported_as_missing_the_target():
    df = parabolas({("mup", "adamw"): -0.5}, seeds=(0,))
    r = summarize(df).iloc[0]
    assert r["meets_target"] == False  # noqa: E712
    assert r["verdict"].startswith("TARGET MISSED") and "beyond ±0.25" in r["verdict"]


def test_diverged_runs_are_kept_but_left_out_of_the_fits():
    df = parabolas({("mup", "adamw"): 0.0})
    clean = eta_stars(df)["log2_eta"].to_numpy()
    blown = df.copy()
    hot = blown["log2_lr"] >= -6.0
    blown.loc[hot, "loss"] = np.nan
    blown.loc[hot, "diverged"] = True
    assert np.allclose(eta_stars(blown)["log2_eta"], clean, atol=0.02)
    cells = curve_means(blown)
    assert (cells.loc[cells["log2_lr"] >= -6.0, "n_diverged"] == 2).all()
    assert cells.loc[cells["log2_lr"] >= -6.0, "loss"].isna().all()


def test_loss_at_reads_the_curve_and_flags_divergence_and_range():
    assert loss_at([-9, -8, -7], [2.0, 3.0, 5.0], -8.5) == pytest.approx(2.5)
    assert loss_at([-9, -8, -7], [2.0, 3.0, 5.0], -8.0) == pytest.approx(3.0)
    assert loss_at([-9, -8, -7], [2.0, np.nan, 5.0], -7.5) == math.inf
    assert math.isnan(loss_at([-9, -8], [2.0, 3.0], -6.0))


def test_an_optimum_at_the_grid_edge_says_which_way_to_widen():
    fit = fit_curve(GRID, 3 + 0.05 * (GRID + 20.0) ** 2)  # true minimum below the grid
    assert "extend --lrs lower" in fit["note"]
    few = fit_curve([-9.0, -8.0], [3.0, 2.9])
    assert math.isnan(few["log2_eta"]) and "needs >= 3" in few["note"]


def test_drift_slope_and_bad_input():
    assert drift_slope([64, 128, 256], [-8.0, -9.0, -10.0]) == pytest.approx(-1.0)
    assert math.isnan(drift_slope([64, 128], [-8.0, np.nan]))
    with pytest.raises(ValueError, match=r"lacks columns \['diverged'\]"):
        check_runs(pd.DataFrame(columns=["scheme", "optimizer", "width", "log2_lr", "seed", "loss"]))


@pytest.mark.parametrize("kwargs, message", [
    ({"schemes": ["mupp"]}, "unknown scheme 'mupp'; choose from"),
    ({"optimizers": ["lion"]}, "unknown optimizer 'lion'"),
    ({"widths": [64]}, "give two or more"),
    ({"widths": [64, 0]}, "widths must be positive ints, got 0"),
    ({"log2_lrs": []}, "log2_lrs is empty"),
    ({"seeds": 2.0}, "seeds must be a count"),
])
def test_grid_errors_name_the_value_and_the_fix(kwargs, message):
    args = {"widths": [64, 128], "schemes": ["mup"], "optimizers": ["adamw"],
            "log2_lrs": [-9, -8], "seeds": 2, **kwargs}
    with pytest.raises((ValueError, TypeError), match=message):
        make_grid(**args)


def test_lrs_flag_parses_ranges_and_lists():
    assert validate_cmd.log2_grid("-14:-12:0.5") == [-14.0, -13.5, -13.0, -12.5, -12.0]
    assert validate_cmd.log2_grid("-12,-10") == [-12.0, -10.0]
    with pytest.raises(argparse.ArgumentTypeError, match="START:STOP:STEP"):
        validate_cmd.log2_grid("-14:-4")
    grid = make_grid([64, 128], ["mup"], ["adamw"], validate_cmd.log2_grid("-10:-8:1"), 2)
    assert command_line("x.toml", grid, 50) == ("mutransfer validate x.toml --widths 64,128 "
                                                 "--schemes mup --optimizers adamw --lrs=-10:-8:1 "
                                                 "--seeds 2 --steps 50")


# ---- the command on a real, tiny grid ---------------------------------------------------------

LRS = [-10.0, -8.0, -6.0, -4.0, -2.0]


@pytest.fixture
def tiny(tmp_path):
    return write_tiny_mlp(tmp_path)


def run_tiny(path, reports, **kwargs):
    args = {"widths": [16, 32], "schemes": ["sp", "mup"], "optimizers": ["adamw"],
            "log2_lrs": LRS, "seeds": 2, "reports_dir": reports, "show_progress": False,
            "device": "cpu", **kwargs}
    return validate(path, **args)


def n_trials(reports) -> int:
    study = optuna.load_study(study_name="tiny-validate",
                              storage=f"sqlite:///{reports.resolve()}/tiny/study.db")
    return len(study.trials)


def test_validate_writes_csv_figure_and_tables_and_resumes(tiny, tmp_path):
    reports = tmp_path / "reports"
    df = run_tiny(tiny, reports)
    assert len(df) == 2 * 2 * len(LRS) * 2
    assert list(df.columns) == ["scheme", "optimizer", "width", "depth", "depth_alpha", "log2_lr", "lr",
                                "seed", "loss", "diverged", "reason", "seconds"]
    assert df["depth"].isna().all() and df["depth_alpha"].isna().all()  # no [model] depth
    assert np.allclose(df["lr"], 2.0 ** df["log2_lr"])
    assert (df["diverged"] | np.isfinite(df["loss"])).all()
    out = reports / "tiny"
    assert pd.read_csv(out / "validate.csv").shape == df.shape
    assert (out / "validate.png").stat().st_size > 20_000, "a figure with curves, not an empty canvas"
    assert (out / "best.png").stat().st_size > 10_000, "best loss against width, every scheme"
    md = (out / "validate.md").read_text()
    assert "](best.png)" in md
    assert md.startswith("Regenerate: `mutransfer validate")
    for needle in ("| scheme | optimizer | drift (octave/doubling)", "## eta* per width: mup + adamw",
                   "## eta* per width: sp + adamw", "| 32 |", "regret"):
        assert needle in md
    # A rerun trains nothing new; a wider grid trains only its new points.
    first = n_trials(reports)
    again = run_tiny(tiny, reports)
    assert n_trials(reports) == first
    pd.testing.assert_frame_equal(again, df)
    wider = run_tiny(tiny, reports, widths=[32, 64])
    assert n_trials(reports) == first + 2 * len(LRS) * 2
    assert sorted(wider["width"].unique()) == [32, 64], "the call returns its own grid"
    # The files show every point of the study and each command that ran some of them.
    assert sorted(pd.read_csv(out / "validate.csv")["width"].unique()) == [16, 32, 64]
    md = (out / "validate.md").read_text()
    assert md.count("Regenerate: `mutransfer validate") == 2 and "--widths 32,64 " in md


def test_an_extended_lr_range_is_fitted_with_the_earlier_points(tiny, tmp_path):
    reports = tmp_path / "reports"
    run_tiny(tiny, reports, schemes=["mup"], seeds=1)
    extended = run_tiny(tiny, reports, schemes=["mup"], seeds=1, log2_lrs=[-1])
    for _, curve in extended.groupby("width"):
        assert sorted(curve["log2_lr"]) == sorted(LRS + [-1]), "one curve: old lrs and the new one"


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # ask/tell here stands for a worker
def test_an_interrupted_point_is_run_again(tiny, tmp_path):
    reports = tmp_path / "reports"
    cfg = load_config(tiny)
    from mutransfer.tuning._storage import default_storage
    from mutransfer.validation._validate import open_study

    study = open_study(cfg.override({"train.eval_every": cfg.train.steps}),
                       default_storage(cfg, reports), "tiny-validate")
    point = {"scheme": "mup", "optimizer": "adamw", "width": 16, "log2_lr": -6.0, "seed": 0}
    study.enqueue_trial(point)
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)  # as Ctrl-C leaves it
    df = run_tiny(tiny, reports, schemes=["mup"], widths=[16, 32], log2_lrs=[-8.0, -6.0, -4.0], seeds=1)
    assert len(df) == 6 and ((df.width == 16) & (df.log2_lr == -6.0)).sum() == 1
    states = [t.state.name for t in study.get_trials()]
    assert states.count("FAIL") == 1 and states.count("COMPLETE") == 6


def test_a_study_from_another_training_setup_is_refused(tiny, tmp_path):
    reports = tmp_path / "reports"
    small = {"schemes": ["mup"], "log2_lrs": [-8.0, -6.0, -4.0], "seeds": 1}
    run_tiny(tiny, reports, **small)
    with pytest.raises(ValueError, match=r"another training setup \(train.steps: was 10, now 4\).*--study"):
        run_tiny(tiny, reports, steps=4, **small)
    df = run_tiny(tiny, reports, steps=4, study_name="tiny-validate-4", **small)
    assert len(df) == 6


def test_a_study_from_before_a_new_config_field_still_resumes(tiny, tmp_path):
    """A field added to the config later, left at its default, changes no run: the study of an
    older version (whose stored setup lacks it) resumes; a non-default value is still refused."""
    reports = tmp_path / "reports"
    small = {"schemes": ["mup"], "log2_lrs": [-8.0, -6.0, -4.0], "seeds": 1}
    run_tiny(tiny, reports, **small)
    from mutransfer.tuning._storage import default_storage

    cfg = load_config(tiny)
    study = optuna.load_study(study_name="tiny-validate", storage=default_storage(cfg, reports))
    older = study.user_attrs["setup"]
    del older["train"]["decay"], older["parametrization"]["constants"]
    study.set_user_attr("setup", older)
    assert len(run_tiny(tiny, reports, **small)) == 6
    tiny.write_text(tiny.read_text().replace("[train]", '[train]\ndecay = "spectral"'))
    with pytest.raises(ValueError, match=r"train.decay: was None, now 'spectral'"):
        run_tiny(tiny, reports, **small)
    tiny.write_text(tiny.read_text().replace('decay = "spectral"\n', ""))
    with pytest.raises(ValueError) as err:  # the refusal names only what differs, not the new fields
        run_tiny(tiny, reports, steps=4, **small)
    assert "(train.steps: was 10, now 4)" in str(err.value) and "constants" not in str(err.value)


def cli(*argv) -> int:
    return run_command(validate_cmd, "validate", *argv)


def test_check_exits_nonzero_when_mup_drifts(tiny, tmp_path, capsys):
    common = [str(tiny), "--widths", "16,32", "--schemes", "mup", "--optimizers", "adamw",
              "--lrs", "-10:-2:2", "--seeds", "1", "--reports", str(tmp_path), "--device", "cpu",
              "--check"]
    assert cli(*common, "--max-drift", "50") == 0
    assert "check passed" in capsys.readouterr().out
    assert cli(*common, "--max-drift", "0") == 1
    assert "check failed: mup + adamw drifts" in capsys.readouterr().out


def test_check_on_synthetic_landscapes(capsys):
    df = parabolas({("mup", "adamw"): -0.6, ("spectral", "adamw"): 0.0, ("sp", "adamw"): -1.0},
                   seeds=(0,))
    assert validate_cmd.check(df, 0.25, ("mup", "spectral")) == 1
    out = capsys.readouterr().out
    assert "mup + adamw drifts -0.60" in out and "spectral" not in out and "sp +" not in out
    assert validate_cmd.check(df[df.scheme != "mup"], 0.25, ("mup", "spectral")) == 0


def test_regret_read_far_from_measured_lrs_says_how_to_measure_it():
    coarse = parabolas({("mup", "adamw"): 0.0}, seeds=(0,), at64=-9.5)
    coarse = coarse[coarse["log2_lr"] % 1 == 0]  # a 1-octave grid: eta* = -9.5 sits between points
    r = summarize(coarse).iloc[0]
    assert r["regret_note"] == "interpolated between 2^-10 and 2^-9 (an upper bound); measure it with --lrs=-10.0:-9.0:0.5"
    fine = parabolas({("mup", "adamw"): 0.0}, seeds=(0,), at64=-9.5)  # -9.5 is measured
    assert summarize(fine).iloc[0]["regret_note"] == ""

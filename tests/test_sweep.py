"""The Optuna sweeper end to end on a tiny MLP: completion, resume, workers, SIGKILL, divergence,
--rerun. Every test uses the real objective (zoo + parametrize + train)."""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mutransfer.runs import load_config
from mutransfer.tuning._storage import open_storage, worker_devices
from mutransfer.tuning._sweep import rerun, sweep

ROOT = Path(__file__).resolve().parents[1]
MLP = ROOT / "sweeps" / "mlp-synthetic.toml"
# the shipped MLP sweep shrunk to milliseconds a trial
TINY = {"sweep.width": 16, "model.base_width": 8, "train.steps": 12, "train.eval_every": 4,
        "train.eval_batches": 1, "model.kwargs": {"depth": 2}, "sweep.space": {
            "lr": {"low": 1e-4, "high": 1e-1, "log": True}, "batch_size": [16, 32]}}
ATTRS = {"width", "batch_size", "scheme", "optimizer", "muon_scale", "diverged", "reason", "seed",
         "device", "seconds", "tokens", "config"}


def tiny(**extra):
    return load_config(MLP, {**TINY, **extra})


def states(study) -> list[str]:
    return [t.state.name for t in study.get_trials(deepcopy=False)]


@pytest.fixture(scope="module")
def six(tmp_path_factory):
    """A 6-trial sweep, shared by the tests that only read it."""
    from mutransfer.validation import write_sweep_report

    reports = tmp_path_factory.mktemp("reports")
    study = sweep(tiny(), trials=6, device="cpu", show_progress=False, reports_dir=reports)
    assert not (reports / "mlp-synthetic" / study.study_name).exists()  # the sweep leaves only its study
    write_sweep_report(study, reports / "mlp-synthetic" / study.study_name)
    return study, reports


def test_six_trial_sweep_completes_with_attrs_and_reports(six):
    study, reports = six
    assert len(study.trials) == 6
    assert set(states(study)) <= {"COMPLETE", "PRUNED"}
    for t in study.trials:
        assert ATTRS - {"diverged", "reason", "seconds", "tokens"} <= set(t.user_attrs)
        assert t.user_attrs["width"] == 16 and t.user_attrs["device"] == "cpu"
        assert t.intermediate_values, "the eval loss is reported for pruning"
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert complete and all(ATTRS <= set(t.user_attrs) for t in complete)
    assert all(math.isfinite(t.value) and t.user_attrs["tokens"] > 0 for t in complete)
    out = reports / "mlp-synthetic" / study.study_name
    for name in ("trials.csv", "history.png", "slice.png"):
        assert (out / name).stat().st_size > 0
    assert (reports / "mlp-synthetic" / "study.db").is_file()


def test_rerun_reproduces_each_trial_loss_on_cpu(six):
    study, reports = six
    for t in study.trials:  # complete ones, and pruned ones up to their pruning step
        stored, new = rerun(tiny(), t.number, reports_dir=reports)
        assert stored == t.value
        assert abs(new - stored) <= 1e-6, (t.number, t.state.name)


def test_pruned_trial_keeps_its_attrs_and_reruns_to_its_step(tmp_path):
    import optuna

    from mutransfer.tuning._sweep import make_objective

    url = f"sqlite:///{tmp_path}/study.db"
    study = optuna.create_study(storage=url, study_name="mlp-synthetic-w16",
                                pruner=optuna.pruners.ThresholdPruner(upper=1e-9))  # prunes all
    study.optimize(make_objective(tiny(), width=16, device="cpu"), n_trials=1)
    t = study.trials[0]
    assert t.state.name == "PRUNED" and list(t.intermediate_values) == [4]  # the first eval
    assert {"width", "batch_size", "seed", "config"} <= set(t.user_attrs)
    stored, new = rerun(tiny(), 0, storage=url)
    assert stored == t.value and abs(new - stored) <= 1e-6


def test_resume_adds_trials_without_duplicates(tmp_path):
    first = sweep(tiny(), trials=6, device="cpu", show_progress=False, reports_dir=tmp_path)
    values = {t.number: t.value for t in first.trials}
    study = sweep(tiny(), trials=12, device="cpu", show_progress=False, reports_dir=tmp_path)
    assert [t.number for t in study.trials] == list(range(12))
    assert {t.number: t.value for t in study.trials[:6]} == values
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 12
    again = sweep(tiny(), trials=12, device="cpu", show_progress=False, reports_dir=tmp_path)
    assert len(again.trials) == 12, "a finished sweep rerun adds nothing"


def test_two_workers_give_distinct_trials(tmp_path):
    study = sweep(tiny(), trials=4, workers=2, device="cpu", show_progress=False, reports_dir=tmp_path)
    trials = study.trials
    assert len(trials) == 4, "the start lock keeps racing workers from passing the total"
    assert set(states(study)) <= {"COMPLETE", "PRUNED"}
    assert len({t.params["lr"] for t in trials}) == len(trials)


def test_grid_workers_with_different_seeds_never_repeat_a_point():
    import optuna

    from mutransfer.tuning._sweep import make_sampler

    lrs = [2.0 ** k for k in range(-10, -4)]
    cfg = tiny(**{"sweep.sampler": "grid", "sweep.pruner": "none", "sweep.trials": len(lrs),
                  "sweep.space": {"lr": lrs}})
    study = optuna.create_study()
    workers = [make_sampler(cfg, seed) for seed in (11, 22)]  # each worker seeds its own sampler
    for i in range(len(lrs) - 1):  # the last point would end the study (Study.stop)
        study.sampler = workers[i % 2]
        trial = study.ask()
        study.tell(trial, trial.suggest_categorical("lr", lrs))
    asked = [t.params["lr"] for t in study.trials]
    assert len(set(asked)) == len(asked) == len(lrs) - 1


def test_tpe_lies_about_running_trials_so_parallel_workers_spread_out():
    """constant_liar: a RUNNING trial counts as a bad value while another worker samples."""
    from mutransfer.tuning import make_sampler

    assert make_sampler(tiny(), 0)._constant_liar is True


@pytest.mark.parametrize("overrides, shortest, longest", [
    ({}, 12, 12),                                                    # [train] steps
    ({"train.tokens": 16 * 24}, 12, 24),                             # batch_size in [16, 32]: 24 or 12 steps
    ({"train.tokens": 16 * 24, "sweep.space": {"lr": [1e-3], "batch_size": {"low": 8, "high": 32},
                                               "tokens": [16 * 24, 16 * 96]}}, 12, 192),
])
def test_the_pruners_use_the_real_step_counts_under_a_token_budget(overrides, shortest, longest):
    import optuna

    from mutransfer.tuning import make_pruner, run_steps

    cfg = tiny(**{"train.eval_every": None, **overrides})
    assert run_steps(cfg) == (shortest, longest)
    median = make_pruner(cfg)
    assert isinstance(median, optuna.pruners.MedianPruner) and median._n_warmup_steps == longest // 4
    hyperband = make_pruner(cfg.override({"sweep.pruner": "hyperband"}))
    assert hyperband._max_resource == longest and hyperband._min_resource == max(1, shortest // 10)


def _beating_and_done(db: Path) -> tuple[int, int]:
    """(RUNNING trials with a heartbeat, COMPLETE + PRUNED trials), read straight from SQLite."""
    if not db.exists():
        return 0, 0
    try:
        with sqlite3.connect(db, timeout=5) as con:
            beating = con.execute("SELECT COUNT(*) FROM trials JOIN trial_heartbeats USING (trial_id) "
                                  "WHERE state = 'RUNNING'").fetchone()[0]
            done = con.execute("SELECT COUNT(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED')").fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0, 0
    return beating, done


def test_sigkilled_worker_loses_nothing_and_leaves_no_zombie(tmp_path):
    # trials long enough (~0.3 s) to be caught RUNNING; heartbeats every second
    overrides = {**TINY, "train.steps": 300, "train.eval_every": 100, "sweep.pruner": "none",
                 "sweep.heartbeat_interval": 1, "sweep.grace_period": 2}
    script = ("import json, sys, torch; torch.set_num_threads(1)\n"
              "from mutransfer import load_config, sweep\n"
              "cfg = load_config(sys.argv[1], json.loads(sys.argv[2]))\n"
              "sweep(cfg, trials=5, device='cpu', show_progress=False, reports_dir=sys.argv[3])\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(MLP), json.dumps(overrides), str(tmp_path)],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                [str(ROOT), os.environ.get("PYTHONPATH", "")])})
    db = tmp_path / "mlp-synthetic" / "study.db"
    deadline = time.time() + 60
    while min(_beating_and_done(db)) < 1:
        assert proc.poll() is None, "the sweep ended before it could be killed"
        assert time.time() < deadline, "no trial was RUNNING within 60 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    cfg = load_config(MLP, overrides)
    storage = open_storage(f"sqlite:///{db}", heartbeat_interval=1, grace_period=2)
    import optuna

    before = {t.number: (t.state.name, t.value) for t in optuna.load_study(
        study_name="mlp-synthetic-w16", storage=storage).trials}
    killed = [n for n, (s, _) in before.items() if s == "RUNNING"]
    assert len(killed) == 1
    study = sweep(cfg, trials=5, device="cpu", show_progress=False, reports_dir=tmp_path)
    after = {t.number: t for t in study.trials}
    for n, (state, value) in before.items():  # nothing completed is lost or rerun
        if state in ("COMPLETE", "PRUNED"):
            assert (after[n].state.name, after[n].value) == (state, value)
    assert after[killed[0]].state.name == "FAIL"
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed[0]]
    assert len(retried) == 1 and retried[0].state.name == "COMPLETE"
    # the retry keeps what the killed trial had sampled (it may die before sampling all)
    assert after[killed[0]].params.items() <= retried[0].params.items()
    assert "RUNNING" not in states(study) and "WAITING" not in states(study)
    assert states(study).count("COMPLETE") + states(study).count("PRUNED") == 5


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_trial_killed_before_its_first_heartbeat_is_failed_and_replaced(tmp_path):
    import optuna

    cfg = tiny(**{"sweep.heartbeat_interval": 1, "sweep.grace_period": 2})
    url = f"sqlite:///{tmp_path}/study.db"
    storage = open_storage(url, heartbeat_interval=1, grace_period=2)
    orphan = optuna.create_study(storage=storage, study_name="mlp-synthetic-w16").ask()  # no beat
    time.sleep(4.1)  # twice the grace period: trials that beat get failed by Optuna first
    study = sweep(cfg, trials=3, storage=url, device="cpu", show_progress=False, reports_dir=tmp_path)
    assert study.trials[orphan.number].state.name == "FAIL"
    assert states(study).count("COMPLETE") + states(study).count("PRUNED") == 3
    assert "RUNNING" not in states(study)


def test_diverging_trials_are_kept_as_worst_values(tmp_path):
    cfg = tiny(**{"sweep.space": {"lr": [1e-3, 1e4]}, "sweep.sampler": "grid", "sweep.trials": 2,
                  "sweep.pruner": "none", "parametrization.optimizer": "sgd"})
    study = sweep(cfg, trials=2, device="cpu", show_progress=False, reports_dir=tmp_path)
    by_lr = {t.params["lr"]: t for t in study.trials}
    good, bad = by_lr[1e-3], by_lr[1e4]
    assert bad.state.name == good.state.name == "COMPLETE"
    assert bad.user_attrs["diverged"] is True and bad.user_attrs["reason"]
    assert math.isfinite(bad.value) and bad.value > 2 * good.value
    assert good.user_attrs["diverged"] is False


def test_cli_rerun_prints_both_losses(six, capsys):
    from mutransfer.cli import sweep as command

    study, reports = six
    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers())
    args = parser.parse_args(["sweep", str(MLP), "--width", "16", "--rerun", "0",
                              "--reports", str(reports)])
    # the file only locates the study (name, --width); the trial trains from its stored config
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "trial 0: stored loss" in out and "rerun loss" in out


@pytest.mark.parametrize("kwargs, message", [
    ({"storage": "study.db"}, r"storage must be an SQLAlchemy URL .* got 'study.db'"),
    ({"workers": 0}, r"workers must be a positive int, e.g. --workers 2; got 0"),
    ({"device": "tpu"}, r"device must be auto, cpu, cuda or cuda:N; got 'tpu'"),
    ({"width": "wide"}, r"overrides: \[sweep\] width must be an int, got 'wide'"),
])
def test_bad_sweep_arguments(tmp_path, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        sweep(tiny(), show_progress=False, reports_dir=tmp_path, **kwargs)


def test_worker_devices_on_cpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the CPU defaults")
    assert worker_devices("auto", None) == ["cpu"]
    assert worker_devices("cpu", 3) == ["cpu"] * 3
    with pytest.raises(ValueError, match="torch sees no CUDA GPU; use --device cpu"):
        worker_devices("cuda", None)


def test_optuna_plots_leave_the_global_matplotlib_style_alone(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna

    from mutransfer.validation import write_sweep_report

    study = optuna.create_study()
    study.optimize(lambda t: (t.suggest_float("lr", 1e-4, 1.0, log=True) - 0.01) ** 2, n_trials=4)
    before = dict(plt.rcParams)
    write_sweep_report(study, tmp_path)
    assert (tmp_path / "history.png").is_file()
    assert plt.rcParams["axes.facecolor"] == before["axes.facecolor"]


def test_a_trial_started_past_the_total_is_failed_untrained():
    import optuna

    from mutransfer.tuning._storage import SurplusTrial, _capped

    study = optuna.create_study()
    racing = [study.ask() for _ in range(3)]  # three workers passed the check at once
    trained = []
    capped = _capped(lambda t: trained.append(t.number) or 1.0, total=2)
    assert [capped(t) for t in racing[:2]] == [1.0, 1.0]
    with pytest.raises(SurplusTrial, match="trial 2 is past the total of 2"):
        capped(racing[2])
    assert trained == [0, 1] and "surplus" in racing[2].user_attrs["reason"]


def test_a_second_seed_is_its_own_study_and_transfer_finds_both(tmp_path):
    from mutransfer.cli.transfer import load_studies
    from mutransfer.validation._report import _sweep_flags
    from mutransfer.tuning._storage import default_storage

    cfg = tiny()
    first = sweep(cfg, trials=2, device="cpu", show_progress=False, reports_dir=tmp_path)
    second = sweep(cfg, trials=2, seed=cfg.sweep.seed + 7, device="cpu", show_progress=False,
                   reports_dir=tmp_path)
    assert second.study_name == f"{first.study_name}-s{cfg.sweep.seed + 7}"
    assert [t.user_attrs["seed"] for t in second.trials] == [cfg.sweep.seed + 7, cfg.sweep.seed + 8]
    assert sweep(cfg, trials=2, seed=cfg.sweep.seed, device="cpu", show_progress=False,
                 reports_dir=tmp_path).study_name == first.study_name, "the config's own seed: same study"
    found = load_studies(cfg, default_storage(cfg, tmp_path), None)
    assert [s.study_name for s in found] == sorted([first.study_name, second.study_name])
    assert _sweep_flags(second.study_name, cfg) == f" --seed {cfg.sweep.seed + 7}"
    assert _sweep_flags(f"{cfg.name}-w32", cfg) == " --width 32"


def test_a_trial_with_no_finite_loss_is_failed_and_the_sweep_goes_on(tmp_path):
    """A grid that used to end at its first bad trial: lr x init_input, where
    init_input = 1e100 overflows at step 0. All six points run; the three bad ones are FAIL with
    their reason, and the transfer leaves them out with a note."""
    from mutransfer.projection import transfer

    cfg = tiny(**{"sweep.sampler": "grid", "sweep.pruner": "none", "sweep.trials": 6,
                  "sweep.space": {"lr": [1e-3, 1e-2, 1e-1], "init_input": [1.0, 1e100]}})
    study = sweep(cfg, device="cpu", show_progress=False, reports_dir=tmp_path)
    by_init = {}
    for t in study.trials:
        by_init.setdefault(t.params["init_input"], []).append(t)
    assert len(study.trials) == 6
    assert [t.state.name for t in by_init[1.0]] == ["COMPLETE"] * 3
    for t in by_init[1e100]:
        assert t.state.name == "FAIL" and t.user_attrs["rejected"] is True
        assert t.user_attrs["error"].startswith("TrialRejected: the run diverged before producing a single finite loss")
    plan = transfer([study], target_width=64)
    assert any("3 trials failed at their point" in w for w in plan.warnings)


def test_a_sweep_whose_first_trials_all_fail_stops_naming_why(tmp_path):
    from mutransfer.tuning._storage import SweepBroken

    cfg = tiny(**{"sweep.sampler": "grid", "sweep.pruner": "none", "sweep.trials": 5,
                  "sweep.stop_if_first_fail": 3,
                  "sweep.space": {"lr": [1e-4, 1e-3, 1e-2, 3e-2, 1e-1], "init_input": [1e100]}})
    with pytest.raises(SweepBroken, match=r"the first 3 trials of 'mlp-synthetic-w16' all failed, so the "
                                          r"model or the space is broken rather than one point: "
                                          r"TrialRejected: the run diverged"):
        sweep(cfg, device="cpu", show_progress=False, reports_dir=tmp_path)
    with pytest.raises(ValueError, match=r"\[sweep\] stop_if_first_fail must be >= 0"):
        tiny(**{"sweep.stop_if_first_fail": -1})


def test_rerun_replays_the_trial_at_its_depth_and_seed_suffix(tmp_path):
    """A proxy of 2 blocks against a target of 4, in the study of a second seed (-s7): the rerun
    finds that study and trains the trial's own depth, so the loss is the stored one exactly."""
    cfg = tiny(**{"model.kwargs": {}, "model.depth": 4, "model.base_depth": 2})
    study = sweep(cfg, trials=2, device="cpu", show_progress=False, reports_dir=tmp_path, seed=7)
    assert study.study_name == "mlp-synthetic-w16-s7"
    assert {t.user_attrs["depth"] for t in study.trials} == {2}
    for t in study.trials:
        stored, new = rerun(cfg, t.number, reports_dir=tmp_path, seed=7)
        assert stored == t.value and abs(new - stored) <= 1e-6


def test_rerun_refuses_a_foreign_factory_unless_trusted(tmp_path):
    """A study anyone can write to (a shared PostgreSQL) could name any code as its factory."""
    import optuna

    cfg = tiny()
    (trial,) = sweep(cfg, trials=1, device="cpu", show_progress=False, reports_dir=tmp_path).trials
    evil = tmp_path / "evil.py"  # someone rewrote the stored factory to their own code
    evil.write_text("from pathlib import Path\nfrom mutransfer.zoo import mlp\n\n"
                    "def make(width, **kw):\n    Path(__file__).with_name('ran').touch()\n"
                    "    return mlp(width, **kw)\n")
    stored = {**trial.user_attrs["config"]}
    stored["model"] = {**stored["model"], "factory": f"{evil}:make"}
    shared = f"sqlite:///{tmp_path}/shared.db"
    optuna.create_study(storage=shared, study_name="mlp-synthetic-w16").add_trial(optuna.trial.create_trial(
        params=trial.params, distributions=trial.distributions, value=trial.value,
        user_attrs={**trial.user_attrs, "config": stored}))
    with pytest.raises(ValueError, match=r"evil\.py:make', not this config's 'mutransfer.zoo:mlp'; "
                                         r"rerunning it would import that code\. Pass trust_study=True "
                                         r"\(--trust-study\)"):
        rerun(cfg, 0, storage=shared)
    assert not (tmp_path / "ran").exists()
    stored_value, new = rerun(cfg, 0, storage=shared, trust_study=True)
    assert (tmp_path / "ran").exists() and stored_value == trial.value and abs(new - stored_value) <= 1e-6

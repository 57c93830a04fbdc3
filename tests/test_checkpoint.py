"""Checkpoints that resume: a run killed with SIGKILL and resumed ends as the uninterrupted run
(bit for bit in one process; within float tolerance under FSDP2 on 2 ranks, and resumed on
another number of ranks); atomic writes; the fingerprint that refuses another config or plan."""
from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from ranks import cli, run_ranks, start_ranks
from tiny import run_command

from mutransfer.cli import main as cli_main
from mutransfer.cli import train as train_cmd
from mutransfer.projection._transfer import TransferPlan
from mutransfer.training import Checkpoints, flat_settings, latest_checkpoint
from mutransfer.training._checkpoint import fingerprint_difference

STEPS = 30
# A factory whose forward sleeps when SLOW_FORWARD is set: the killed run is still mid-way when
# its first checkpoint appears, whatever the machine's speed.
SLOW_FACTORY = '''
import os, time
from mutransfer import zoo

def make(width, depth=3, in_dim=8, out_dim=4):
    model = zoo.mlp(width, depth=depth, in_dim=in_dim, out_dim=out_dim)
    pause = float(os.environ.get("SLOW_FORWARD") or 0)
    if pause:
        model.register_forward_pre_hook(lambda module, args: time.sleep(pause))
    return model
'''


def _config(tmp: Path, name: str, *, optimizer: str = "muon", parallel: str = "none",
            decay: str = "spectral", every: int = 5) -> Path:
    factory = tmp / "slow_mlp.py"
    factory.write_text(SLOW_FACTORY)
    text = "\n".join([
        f'name = "{name}"',
        "[model]", f'factory = "{factory}:make"', "width = 64", "base_width = 8",
        "[data]", 'source = "synthetic"', "in_dim = 8", "out_dim = 4",
        "[train]", f"steps = {STEPS}", "batch_size = 16", "eval_batches = 2", f'decay = "{decay}"',
        f'parallel = "{parallel}"', f"checkpoint_every = {every}",
        "[parametrization]", 'scheme = "mup"', f'optimizer = "{optimizer}"',
        "[sweep]", "width = 16",
        "[sweep.space]", "lr = { low = 1e-4, high = 1e-1, log = true }", ""])
    path = tmp / f"{name}-{parallel}.toml"
    path.write_text(text)
    return path


def _plan(tmp: Path, optimizer: str = "muon", lr: float | None = None) -> Path:
    plan = TransferPlan(lr=lr or (0.02 if optimizer == "muon" else 0.01), lr_interval=(0.005, 0.04),
                        batch_size=16, target_width=32, scheme="mup", optimizer_name=optimizer,
                        base_width=8, adam_lr=3e-3 if optimizer == "muon" else None, weight_decay=0.1)
    path = tmp / f"plan-{optimizer}-{plan.lr}.json"
    path.write_text(plan.to_json())
    return path


def _argv(cfg: Path, plan: Path, out: Path, *extra: str) -> list[str]:
    return ["train", str(cfg), "--plan", str(plan), "--out", str(out), *extra]


def _kill_after_first_checkpoint(ranks, folder: Path) -> int:
    """SIGKILL every rank once a checkpoint is complete in ``folder``; its step."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = latest_checkpoint(folder)
        if found is not None:
            assert ranks.kill() == [-signal.SIGKILL] * len(ranks.processes)
            return int(found.name.split("-")[1])
        if ranks.failed():
            ranks.wait()  # raises with the rank's traceback
        time.sleep(0.005)
    raise AssertionError("no checkpoint appeared within 60 s")


def _saved_state(checkpoint: Path, tmp: Path) -> dict:
    """A checkpoint's model and optimizer tensors, flattened to name -> tensor."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    out = tmp / f"{checkpoint.parent.parent.name}.pt"
    dcp_to_torch_save(checkpoint, out)
    return {k: v for k, v in flat_settings(torch.load(out, weights_only=False)).items()
            if isinstance(v, torch.Tensor)}


def _history(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "history.csv").drop(columns="seconds")


def test_a_killed_run_resumes_bit_identical_in_one_process(tmp_path):
    """Muon with spectral decay: its momentum and power-iteration vectors are in the checkpoint."""
    cfg, plan = _config(tmp_path, "kill"), _plan(tmp_path)
    killed = tmp_path / "killed"
    run = start_ranks(cli, world=1, init_group=False, argv=_argv(cfg, plan, killed),
                      env={"SLOW_FORWARD": "0.03"})
    step = _kill_after_first_checkpoint(run, killed / "checkpoints")
    assert 0 < step < STEPS and not (killed / "history.csv").exists()  # it never finished

    assert run_command(train_cmd, *_argv(cfg, plan, killed, "--resume")) == 0
    whole = tmp_path / "whole"
    assert run_command(train_cmd, *_argv(cfg, plan, whole)) == 0

    resumed = _history(killed)
    assert len(resumed) == STEPS
    pd.testing.assert_frame_equal(resumed, _history(whole), check_exact=True)
    a = _saved_state(latest_checkpoint(killed / "checkpoints"), tmp_path)
    b = _saved_state(latest_checkpoint(whole / "checkpoints"), tmp_path)
    assert a.keys() == b.keys()
    assert any(k.endswith("momentum_buffer") for k in a) and any(k.endswith("spectral_v") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


def test_fsdp_on_two_ranks_killed_and_resumed_on_two_ranks_or_one(tmp_path):
    cfg = _config(tmp_path, "shard", optimizer="adamw", parallel="fsdp", decay="decoupled")
    plan, two, one = _plan(tmp_path, "adamw"), tmp_path / "two", tmp_path / "one"
    run = start_ranks(cli, world=2, init_group=False, argv=_argv(cfg, plan, two),
                      env={"SLOW_FORWARD": "0.03"})
    step = _kill_after_first_checkpoint(run, two / "checkpoints")
    assert 0 < step < STEPS
    shutil.copytree(two / "checkpoints", one / "checkpoints")  # the same, for one process
    assert run_ranks(cli, world=2, init_group=False, argv=_argv(cfg, plan, two, "--resume")) == [0, 0]
    cfg_one = _config(tmp_path, "shard", optimizer="adamw", parallel="none", decay="decoupled")
    assert run_command(train_cmd, *_argv(cfg_one, plan, one, "--resume")) == 0  # DCP reshards
    whole = tmp_path / "whole"
    assert run_command(train_cmd, *_argv(cfg_one, plan, whole)) == 0

    want = _history(whole)
    for got in (_history(two), _history(one)):
        assert len(got) == STEPS
        pd.testing.assert_frame_equal(got, want, rtol=1e-5, atol=1e-6)


def test_resume_without_a_checkpoint_says_so(tmp_path, capsys):
    cfg, plan = _config(tmp_path, "none"), _plan(tmp_path)
    code = cli_main(["train", str(cfg), "--plan", str(plan), "--out", str(tmp_path / "o"), "--resume"])
    assert code == 2
    assert f"no checkpoint to resume from in {tmp_path / 'o' / 'checkpoints'}" in capsys.readouterr().err


def test_a_checkpoint_of_another_config_or_plan_is_refused_naming_the_difference(tmp_path):
    cfg, plan, out = _config(tmp_path, "fp", every=2), _plan(tmp_path), tmp_path / "o"
    assert run_command(train_cmd, "train", str(cfg), "--plan", str(plan), "--out", str(out),
                       "--steps", "4") == 0
    with pytest.raises(ValueError, match=r"plan\.lr: 0\.02 \(checkpoint\) vs 0\.03 \(this run\)"):
        run_command(train_cmd, "train", str(cfg), "--plan", str(_plan(tmp_path, lr=0.03)), "--out",
                    str(out), "--steps", "4", "--resume")
    with pytest.raises(ValueError, match=r"run\.steps: 4 \(checkpoint\) vs 6 \(this run\)"):
        run_command(train_cmd, "train", str(cfg), "--plan", str(plan), "--out", str(out),
                    "--steps", "6", "--resume")
    cfg.write_text(cfg.read_text().replace('decay = "spectral"', 'decay = "decoupled"'))
    with pytest.raises(ValueError, match=r"config\.train\.decay: 'spectral' \(checkpoint\) vs "
                                         r"'decoupled' \(this run\)"):
        run_command(train_cmd, "train", str(cfg), "--plan", str(plan), "--out", str(out),
                    "--steps", "4", "--resume")


def test_writes_are_atomic_and_the_newest_two_checkpoints_stay(tmp_path):
    folder = tmp_path / "o" / "checkpoints"
    (folder / ".tmp-step-000099").mkdir(parents=True)  # a crash mid-write
    (folder / ".tmp-step-000099" / "__0_0.distcp").write_bytes(b"partial")
    (folder / "step-000002").mkdir()  # no meta.json: not complete, never read (and replaced)
    with pytest.warns(UserWarning, match=r"step-000002 is damaged \(meta\.json: FileNotFoundError"):
        assert latest_checkpoint(folder) is None
    cfg, plan = _config(tmp_path, "atomic", every=2), _plan(tmp_path)
    assert run_command(train_cmd, "train", str(cfg), "--plan", str(plan), "--out",
                       str(tmp_path / "o"), "--steps", "5") == 0
    assert sorted(p.name for p in folder.iterdir()) == ["step-000004", "step-000005"]  # older ones gone
    assert latest_checkpoint(folder) == folder / "step-000005"
    with pytest.raises(ValueError, match=r"holds checkpoints of an earlier run \(newest: step-000005\); "
                                         r"continue it with --resume"):
        run_command(train_cmd, "train", str(cfg), "--plan", str(plan), "--out", str(tmp_path / "o"),
                    "--steps", "5")


def test_fingerprints_and_bad_arguments(tmp_path):
    from mutransfer.runs import load_config

    with pytest.raises(ValueError, match=r"\[train\] checkpoint_every must be >= 1, got 0"):
        load_config(_config(tmp_path, "zero", every=0))
    assert flat_settings({"a": {"b": 1, "c": (2, 3)}, "d": None}) == {"a.b": 1, "a.c": [2, 3], "d": None}
    assert fingerprint_difference({"a": 1, "b": 2}, {"a": 1, "c": 3}) == [
        "b: 2 (checkpoint) vs '-' (this run)", "c: '-' (checkpoint) vs 3 (this run)"]
    assert fingerprint_difference({"x": float("nan")}, {"x": float("nan")}) == []
    with pytest.raises(ValueError, match="checkpoint every must be a positive number of steps"):
        Checkpoints("c", every=0)
    with pytest.raises(TypeError, match="fingerprint values must be JSON"):
        Checkpoints("c", every=1, fingerprint={"model": torch.nn.Linear(1, 1)})
    assert Checkpoints("c", every=5).due(10, 12) and Checkpoints("c", every=5).due(12, 12)
    assert not Checkpoints("c", every=5).due(11, 12) and not Checkpoints("c").due(12, 12)


def test_sweep_trials_never_checkpoint(tmp_path, monkeypatch):
    """[train] checkpoint_every is the target run's: a proxy trial stays short and writes nothing."""
    from mutransfer.runs import load_config, run_trial

    monkeypatch.chdir(tmp_path)
    cfg = load_config(_config(tmp_path, "sweep", every=1))
    res = run_trial(cfg, {"lr": 0.01, "adam_lr": 1e-3}, width=16, device="cpu", seed=0)
    assert res.steps == STEPS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slow_mlp.py", "sweep-none.toml"]


def test_a_truncated_newest_checkpoint_falls_back_to_the_one_before(tmp_path):
    """A power cut after the rename can leave the newest checkpoint cut short: its files no longer
    match the SHA-256 in meta.json, and --resume goes on from the previous one with a warning."""
    import json

    cfg, plan = _config(tmp_path, "cut", optimizer="adamw", decay="decoupled", every=2), _plan(tmp_path, "adamw")
    out, whole = tmp_path / "o", tmp_path / "whole"
    assert run_command(train_cmd, *_argv(cfg, plan, whole, "--steps", "6")) == 0
    assert run_command(train_cmd, *_argv(cfg, plan, out, "--steps", "6")) == 0
    folder = out / "checkpoints"
    meta = json.loads((folder / "step-000006" / "meta.json").read_text())
    assert set(meta["sha256"]) == {str(p.relative_to(folder / "step-000006"))
                                   for p in (folder / "step-000006").rglob("*") if p.name != "meta.json"}
    loop = folder / "step-000006" / "loop.pt"
    loop.write_bytes(loop.read_bytes()[:100])  # truncated
    with pytest.warns(UserWarning, match=r"step-000006 is damaged \(loop\.pt: SHA-256 differs"):
        assert latest_checkpoint(folder) == folder / "step-000004"
    (out / "history.csv").unlink()
    with pytest.warns(UserWarning, match="falling back to an older one"):
        assert run_command(train_cmd, *_argv(cfg, plan, out, "--steps", "6", "--resume")) == 0
    pd.testing.assert_frame_equal(_history(out), _history(whole), check_exact=True)
    assert latest_checkpoint(folder) == folder / "step-000006"  # rewritten whole

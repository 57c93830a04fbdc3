"""Training the target with a transfer plan: `mutransfer.train_target` and `mutransfer train`."""
from __future__ import annotations

import functools
import math

import pytest
import torch
from tiny import run_command, write_tiny_mlp

import mutransfer
from mutransfer import load_config, zoo
from mutransfer.cli import train as train_cmd
from mutransfer.training.data import synthetic
from mutransfer.projection._target import load_plan, train_target
from mutransfer.projection._transfer import TransferPlan


def _plan(**kw) -> TransferPlan:
    settings = dict(lr=0.01, lr_interval=(0.005, 0.02), batch_size=16, target_width=32, scheme="mup",
                    optimizer_name="adamw", base_width=8, predicted_loss=1.3, loss_interval=(1.2, 1.4))
    return TransferPlan(**{**settings, **kw})


def test_train_target_uses_the_plans_lr_batch_and_width(tmp_path):
    cfg = load_config(write_tiny_mlp(tmp_path))
    res = train_target(cfg, _plan(), device="cpu", progress=False)
    assert math.isfinite(res.final_loss) and not res.diverged
    assert res.history["lr"].max() == pytest.approx(0.01)  # the peak of warmup + cosine
    assert res.tokens == 16 * cfg.train.steps  # batch 16, one example per row of synthetic data
    assert train_target(cfg, _plan(), steps=4, device="cpu", progress=False).steps == 4


def test_train_target_equals_the_python_path_through_plan_optimizer(tmp_path):
    """`mutransfer train` and `plan.optimizer(parametrize(...))` + `mutransfer.train` agree exactly."""
    cfg, plan = load_config(write_tiny_mlp(tmp_path)), _plan()
    res = train_target(cfg, plan, device="cpu", progress=False)
    torch.manual_seed(0)
    factory = functools.partial(zoo.mlp, depth=2, in_dim=8, out_dim=4)
    p = mutransfer.parametrize(factory, width=32, base_width=8, scheme="mup", seed=0)
    t = cfg.train
    direct = mutransfer.train(p.model, plan.optimizer(p), synthetic(in_dim=8, out_dim=4), steps=t.steps,
                              batch_size=plan.batch_size, seq_len=None, schedule=t.schedule, warmup=t.warmup,
                              clip=t.clip, device="cpu", eval_every=max(1, t.steps // 10),
                              eval_batches=t.eval_batches, seed=0)
    assert direct.final_loss == res.final_loss


def test_a_plan_for_another_scheme_is_refused(tmp_path):
    cfg = load_config(write_tiny_mlp(tmp_path))
    with pytest.raises(ValueError, match="plan's scheme is 'sp' but the config trains scheme 'mup'"):
        train_target(cfg, _plan(scheme="sp"), device="cpu", progress=False)
    with pytest.raises(ValueError, match="plan's base_width is 16"):
        train_target(cfg, _plan(base_width=16), device="cpu", progress=False)
    with pytest.raises(ValueError, match="width must be a positive int"):
        train_target(cfg, _plan(), width=0, device="cpu", progress=False)


@pytest.mark.parametrize("field, value, configured", [
    ("muon_scale", "keller", None),              # an adamw plan ignores muon_scale: no refusal
    ("readout", "zero", "'init'"),
    ("wd_policy", "independent", "'fixed_product'"),
    ("depth_alpha", 1.0, "0.5"),
])
def test_every_setting_of_the_plan_is_checked_against_the_config(tmp_path, field, value, configured):
    cfg = load_config(write_tiny_mlp(tmp_path))
    if configured is None:
        train_target(cfg, _plan(**{field: value}), steps=2, device="cpu", progress=False)
        muon = cfg.override({"parametrization.optimizer": "muon"})
        with pytest.raises(ValueError, match=r"plan's muon_scale is 'keller' but the config trains "
                                             r"muon_scale 'spectral'"):
            train_target(muon, _plan(optimizer_name="muon", muon_scale="keller"), device="cpu", progress=False)
        return
    with pytest.raises(ValueError, match=rf"plan's {field} is {value!r} but the config trains {field} {configured}"):
        train_target(cfg, _plan(**{field: value}), device="cpu", progress=False)


def test_missing_plan_file_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="mutransfer transfer CONFIG"):
        load_plan(tmp_path / "plan.json")


def test_cli_writes_history_figure_and_summary(tmp_path, capsys):
    config = write_tiny_mlp(tmp_path)
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(_plan().to_json())
    out = tmp_path / "run"
    assert run_command(train_cmd, "train", str(config), "--plan", str(plan_path), "--device", "cpu",
                       "--out", str(out)) == 0
    assert {p.name for p in out.iterdir()} == {"history.csv", "loss.png", "train.md"}
    assert (out / "loss.png").stat().st_size > 10_000
    text = (out / "train.md").read_text()
    assert "mutransfer train" in text and "| final eval loss |" in text and "1.3000 [1.2000, 1.4000]" in text
    assert "final eval loss" in capsys.readouterr().out


def test_cli_exits_1_when_the_target_diverges(tmp_path):
    config = write_tiny_mlp(tmp_path)
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(_plan(lr=1e4).to_json())
    assert run_command(train_cmd, "train", str(config), "--plan", str(plan_path), "--device", "cpu",
                       "--out", str(tmp_path / "run")) == 1
    assert "diverged" in (tmp_path / "run" / "train.md").read_text()


def test_tensorboard_log_writes_each_steps_scalars(tmp_path):
    """[train] log = "tensorboard": loss, lr per group, grad norm and tokens/s for every step."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = load_config(write_tiny_mlp(tmp_path)).override({"train.log": "tensorboard"})
    res = train_target(cfg, _plan(), steps=6, device="cpu", progress=False, log_dir=tmp_path / "tb")
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss/train", "loss/eval", "grad_norm", "tokens_per_second"} <= tags
    assert any(t.startswith("lr/") for t in tags)
    assert [e.step for e in events.Scalars("loss/train")] == list(range(1, 7))
    assert [e.value for e in events.Scalars("loss/train")] == pytest.approx(res.history["train_loss"].tolist())
    with pytest.raises(ValueError, match=r"\[train\] log must be one of none, tensorboard, got 'wandb'"):
        cfg.override({"train.log": "wandb"})

"""The training loop: learning on pycorpus with muP plans (AdamW, Muon), determinism, schedules
with per-group multipliers, fixed eval batches, divergence, callbacks, the gradient-noise
estimator against an analytic B_simple, and argument errors."""
from __future__ import annotations

import functools
import importlib
import math

import pytest
import torch
import torch.nn.functional as F

from mutransfer import data, parametrize, zoo

# `mutransfer.train` the attribute is the function; the module holds the constants too
T = importlib.import_module("mutransfer.training._loop")
GPT = functools.partial(zoo.gpt, depth=2, seq_len=32)


def tiny_gpt(width: int = 32, seed: int = 0):
    torch.manual_seed(seed)
    return GPT(width=width)


@pytest.mark.parametrize("optimizer, lr, extra", [("adamw", 3e-3, {}),
                                                   ("muon", 0.02, {"adam_lr": 3e-3})])
def test_loss_falls_on_pycorpus_within_50_steps(optimizer, lr, extra):
    torch.manual_seed(0)
    plan = parametrize(GPT, width=64, base_width=32, optimizer=optimizer)
    res = T.train(plan.model, plan.optimizer(lr, **extra), data.pycorpus(), steps=50, batch_size=8,
                  seq_len=32, eval_every=25, eval_batches=2, device="cpu")
    first = res.history["train_loss"].iloc[0]
    assert first == pytest.approx(math.log(256), abs=0.5)  # near uniform over bytes at init
    assert not res.diverged and res.reason is None and res.steps == 50
    assert res.final_loss < first - 1.5, res.history
    assert list(res.history.columns) == list(T.COLUMNS)
    assert res.history["eval_loss"].notna().sum() == 2 and res.tokens == 50 * 8 * 32


def test_same_seed_same_run_on_cpu():
    runs = []
    for seed in (0, 0, 1):
        model = tiny_gpt()
        res = T.train(model, torch.optim.AdamW(model.parameters(), 1e-3), data.pycorpus(), steps=6,
                      batch_size=4, seq_len=16, eval_batches=1, seed=seed)
        runs.append(res.history.drop(columns="seconds"))
    assert runs[0].equals(runs[1])
    assert not runs[0]["train_loss"].equals(runs[2]["train_loss"])


def test_schedule_keeps_the_plans_group_multipliers():
    torch.manual_seed(0)
    plan = parametrize(GPT, width=64, base_width=32)
    opt = plan.optimizer(1e-3)
    steps, warmup = 10, 2
    res = T.train(plan.model, opt, data.pycorpus(), steps=steps, batch_size=4, seq_len=16,
                  warmup=warmup, schedule="cosine", eval_batches=1)
    expected = [1e-3 * T.lr_factor(s, steps, warmup, "cosine") for s in range(steps)]
    assert res.history["lr"].tolist() == pytest.approx(expected)
    assert expected[:3] == pytest.approx([5e-4, 1e-3, 1e-3])
    final = T.lr_factor(steps, steps, warmup, "cosine")  # LambdaLR has stepped `steps` times
    mults = {g["lr_mult"] for g in opt.param_groups}
    assert len(mults) > 1  # muP gives hidden and input groups different lrs
    for g in opt.param_groups:
        assert g["initial_lr"] == pytest.approx(1e-3 * g["lr_mult"])
        assert g["lr"] == pytest.approx(g["initial_lr"] * final)


@pytest.mark.parametrize("schedule, at_half", [("cosine", 0.5), ("linear", 0.5), ("constant", 1.0)])
def test_lr_factor_shapes(schedule, at_half):
    assert T.lr_factor(0, 110, 10, schedule) == pytest.approx(0.1)
    assert T.lr_factor(60, 110, 10, schedule) == pytest.approx(at_half)
    assert T.warmup_steps_of(0.05, 100) == 5 and T.warmup_steps_of(7, 100) == 7


def test_eval_uses_the_same_batches_every_time():
    model = tiny_gpt()
    res = T.train(model, torch.optim.SGD(model.parameters(), lr=0.0), data.pycorpus(), steps=4,
                  batch_size=4, seq_len=16, eval_every=1, eval_batches=2, warmup=0)
    evals = res.history["eval_loss"]
    assert evals.notna().all() and evals.nunique() == 1
    assert res.history["train_loss"].nunique() == 4  # training batches do change


def test_eval_set_is_fixed_by_eval_batch_size_not_the_training_batch():
    """Runs that train with different batch sizes are judged on one eval set (a batch sweep)."""
    def final(batch_size, **kw):
        model = tiny_gpt()
        return T.train(model, torch.optim.SGD(model.parameters(), lr=0.0), data.pycorpus(), steps=2,
                       batch_size=batch_size, seq_len=16, eval_batches=2, warmup=0, **kw).final_loss

    assert final(4, eval_batch_size=8) == final(16, eval_batch_size=8) == final(8)
    assert final(4) != final(16)  # the old default: the eval set grows with the training batch


def test_grad_accum_gives_the_same_steps_as_one_batch():
    losses = []
    for accum in (1, 4):
        model = tiny_gpt()
        res = T.train(model, torch.optim.SGD(model.parameters(), lr=0.1), data.pycorpus(), steps=3,
                      batch_size=8, seq_len=16, grad_accum=accum, eval_batches=1, warmup=0)
        losses.append(res.history[["train_loss", "grad_norm", "eval_loss"]])
    torch.testing.assert_close(torch.tensor(losses[0].values), torch.tensor(losses[1].values),
                               rtol=1e-4, atol=1e-5, equal_nan=True)


@pytest.mark.parametrize("lr", [1.0, 1e4])
def test_divergence_is_a_result_not_a_crash(lr):
    model = tiny_gpt()
    res = T.train(model, torch.optim.AdamW(model.parameters(), lr=lr), data.pycorpus(), steps=40,
                  batch_size=4, seq_len=16, warmup=0, eval_batches=1)
    assert res.diverged and res.diverged_step is not None and res.diverged_step < 40
    assert "far above the initial loss" in res.reason or "non-finite" in res.reason
    assert math.isnan(res.final_loss) and len(res.history) == res.diverged_step


def test_non_finite_loss_diverges_immediately():
    model = zoo.mlp(16, in_dim=32, out_dim=10)
    res = T.train(model, torch.optim.SGD(model.parameters(), lr=1e12), data.synthetic(), steps=20,
                  batch_size=8, seq_len=None, warmup=0, clip=0, eval_batches=1)
    assert res.diverged and res.diverged_step <= 4


def test_callback_sees_each_eval_and_may_stop_the_run():
    seen = []

    def callback(step, eval_loss):
        seen.append((step, eval_loss))
        return step >= 4

    model = zoo.mlp(16)
    res = T.train(model, torch.optim.AdamW(model.parameters(), 1e-3), data.synthetic(), steps=10,
                  batch_size=8, seq_len=None, eval_every=2, eval_batches=1, callback=callback)
    assert [s for s, _ in seen] == [2, 4] and res.steps == 4 and not res.diverged
    assert res.reason == "stopped by callback at step 4" and res.final_loss == seen[-1][1]

    class Pruned(Exception):
        pass

    def prune(step, eval_loss):
        raise Pruned(step)

    with pytest.raises(Pruned):
        T.train(zoo.mlp(16), torch.optim.SGD(model.parameters(), 0.1), data.synthetic(), steps=4,
                batch_size=8, seq_len=None, eval_every=2, eval_batches=1, callback=prune)


class LinearRegression:
    """y = w* . x + N(0, sigma^2), x ~ N(0, I_d); implements the dataset protocol.

    For the MSE loss at w = w* + e, per-example gradients 2 (e.x - noise) x have mean
    G = 2e and covariance 4 ((|e|^2 + sigma^2) I + e e^T), so
    B_simple = tr(Sigma) / |G|^2 = (d (|e|^2 + sigma^2) + |e|^2) / |e|^2.
    """

    def __init__(self, d: int, sigma: float):
        self.d, self.sigma = d, sigma
        self.w = torch.randn(d, 1, generator=torch.Generator().manual_seed(123))

    def batch(self, split, batch_size, seq_len=None, generator=None, device="cpu"):
        x = torch.randn(batch_size, self.d, generator=generator)
        return x, x @ self.w + self.sigma * torch.randn(batch_size, 1, generator=generator)

    def loss(self, outputs, y):
        return F.mse_loss(outputs, y)


@pytest.mark.parametrize("seed", [0, 1])
def test_noise_scale_estimate_matches_linear_regression(seed):
    d, sigma = 32, 1.0
    ds = LinearRegression(d, sigma)
    model = torch.nn.Linear(d, 1, bias=False)
    offset = torch.randn(1, d, generator=torch.Generator().manual_seed(seed + 7)) / math.sqrt(d)
    with torch.no_grad():
        model.weight.copy_(ds.w.T + offset)
    e2 = float(offset.pow(2).sum())
    # lr = 0 holds the point fixed, so the true value is known at every step
    res = T.train(model, torch.optim.SGD(model.parameters(), lr=0.0), ds, steps=1200, batch_size=128,
                  seq_len=None, grad_accum=8, warmup=0, clip=0, eval_batches=1, seed=seed,
                  measure_noise=True, noise_decay=0.998)
    noise = res.noise
    assert noise["b_small"] == 16 and noise["b_big"] == 128 and noise["n"] == 1200
    assert noise["g2"] == pytest.approx(4 * e2, rel=0.2)
    assert noise["trace_sigma"] == pytest.approx(4 * (d * (e2 + sigma**2) + e2), rel=0.2)
    assert noise["b_simple"] == pytest.approx((d * (e2 + sigma**2) + e2) / e2, rel=0.2)
    assert res.history["g2_small"].gt(res.history["g2_big"]).mean() > 0.7  # small batches: noisier


def test_noise_is_measured_after_warmup_only():
    model = zoo.mlp(16)
    res = T.train(model, torch.optim.AdamW(model.parameters(), 1e-3), data.synthetic(), steps=10,
                  batch_size=16, seq_len=None, grad_accum=2, warmup=4, eval_batches=1,
                  measure_noise=True)
    assert res.noise["n"] == 6 and res.history["g2_big"].isna().sum() == 4
    assert set(res.noise) >= {"b_simple", "g2", "trace_sigma", "loss"}


@pytest.mark.parametrize("kwargs, error, match", [
    ({"measure_noise": True}, ValueError, "needs grad_accum >= 2; got grad_accum=1"),
    ({"grad_accum": 3}, ValueError, "batch_size 8 is not divisible by grad_accum 3"),
    ({"schedule": "step"}, ValueError, "unknown schedule 'step'"),
    ({"warmup": 10}, ValueError, "warmup of 10 steps leaves none of the 10 steps"),
    ({"warmup": -1}, ValueError, "warmup must be a fraction"),
    ({"dtype": "fp8"}, ValueError, "unknown dtype 'fp8'"),
    ({"steps": 0}, ValueError, "steps must be a positive integer; got 0"),
    ({"eval_every": 0}, ValueError, "eval_every must be a positive integer; got 0"),
    ({"eval_batch_size": 0}, ValueError, "eval_batch_size must be a positive integer; got 0"),
    ({"clip": -1.0}, ValueError, "clip must be a max grad norm >= 0"),
    ({"noise_decay": 1.0}, ValueError, "noise_decay must be in"),
    ({"data": object()}, TypeError, "data must implement batch"),
])
def test_bad_arguments(kwargs, error, match):
    model = zoo.mlp(8)
    args = {"data": data.synthetic(), "steps": 10, "batch_size": 8, "seq_len": None, **kwargs}
    with pytest.raises(error, match=match):
        T.train(model, torch.optim.SGD(model.parameters(), 0.1), args.pop("data"), **args)


def test_auto_device_and_dtype():
    assert T.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert T.resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert T.resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16


@pytest.mark.cuda
def test_trains_on_cuda_with_bf16_autocast():
    model = tiny_gpt()
    res = T.train(model, torch.optim.AdamW(model.parameters(), 3e-3), data.pycorpus(), steps=20,
                  batch_size=8, seq_len=32, device="cuda", eval_batches=1)
    assert res.device.startswith("cuda") and not res.diverged
    assert res.final_loss < res.history["train_loss"].iloc[0]


def test_lr_scheduler_is_the_loops_schedule_for_any_loop():
    plan = parametrize(functools.partial(zoo.mlp, depth=3, in_dim=8, out_dim=4), width=64,
                       base_width=16, seed=0)
    opt = plan.optimizer(1e-3)
    sched = T.lr_scheduler(opt, steps=10, warmup=2)
    seen = []
    for _ in range(10):
        seen.append({g["lr"] / g["lr_mult"] for g in opt.param_groups})
        opt.step()
        sched.step()
    assert all(len(lrs) == 1 for lrs in seen)  # every group at the same base lr: multipliers kept
    assert [lrs.pop() for lrs in seen] == pytest.approx([1e-3 * T.lr_factor(s, 10, 2, "cosine")
                                                         for s in range(10)])
    with pytest.raises(ValueError, match="steps must be a positive integer; got 0"):
        T.lr_scheduler(opt, steps=0)
    with pytest.raises(ValueError, match="unknown schedule 'step'; use one of cosine, linear, constant"):
        T.lr_scheduler(opt, steps=10, schedule="step")


def test_transformers_trainer_takes_the_plans_optimizer_and_schedule(quickstart_tokens, monkeypatch):
    """The README's recipe as written: a Llama from config, no download, on the tokens the tokens
    quickstart prepares (a tiny folder of them at that path)."""
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate", reason="transformers' Trainer needs accelerate (the hf extra)")
    monkeypatch.chdir(quickstart_tokens)
    from readme_blocks import readme_block

    ns = {"__name__": "recipe"}
    exec(compile(readme_block("Trainer("), "README.md", "exec"), ns)
    trainer, opt, sched, lr, steps = (ns[k] for k in ("trainer", "opt", "sched", "lr", "steps"))
    vocab = ns["data"].vocab
    assert vocab == 300 and trainer.model.get_input_embeddings().weight.shape[0] == vocab
    assert int(ns["ids"].max()) < vocab and ns["ids"].shape == (64, 32)
    assert getattr(trainer.optimizer, "optimizer", trainer.optimizer) is opt
    assert trainer.lr_scheduler is sched and sched.last_epoch == trainer.state.global_step == steps
    assert len({g["lr_mult"] for g in opt.param_groups}) > 1
    for g in opt.param_groups:
        assert g["initial_lr"] == pytest.approx(lr * g["lr_mult"])
    assert {float(state["step"]) for state in opt.state.values()} == {float(steps)}
    assert math.isfinite(trainer.state.log_history[-1]["train_loss"])

"""torch.compile: a plan's readout and residual-branch hooks, QK-Clip's recording hooks and the
plan's optimizer work on the compiled model with the losses of eager; `[train] compile = true`.

The backends here are dynamo's "eager" (graph capture, eager kernels) and "aot_eager" (plus
AOTAutograd's traced backward); inductor's C++ build takes ~12 s cold on this CPU, so its speed
and losses are measured by ``python -m mutransfer.bench compile`` instead."""
from __future__ import annotations

import functools
import math

import pandas as pd
import pytest
import torch
from tiny import write_tiny_mlp

import mutransfer
from mutransfer import zoo
from mutransfer.projection._target import train_target
from mutransfer.projection._transfer import TransferPlan
from mutransfer.training import wrap_model
from mutransfer.runs import load_config

GPT = functools.partial(zoo.gpt, depth=2, seq_len=8)
SETTINGS = {"adamw": (1e-2, {"weight_decay": 0.1, "decay": "spectral"}),
            "muon": (0.02, {"adam_lr": 1e-3, "weight_decay": 0.1, "decay": "spectral",
                            "ns_dtype": torch.float32})}


def _run(optimizer: str, backend: str | None, steps: int = 4):
    """``steps`` of `mutransfer.train` on the tiny GPT (readout multiplier, depth 2 on a base of 1:
    residual-branch hooks) with QK-Clip and spectral decay, compiled with ``backend`` or eager."""
    torch.manual_seed(0)
    plan = mutransfer.parametrize(GPT, width=32, base_width=16, depth=2, base_depth=1, scheme="mup",
                                  optimizer=optimizer, readout="multiplier",
                                  constants={"lr_hidden": 2.0, "init_input": 0.5})
    assert plan.readout_scales and plan.residual_scales  # the hooks under test exist
    model = plan.model if backend is None else torch.compile(plan.model, backend=backend)
    lr, kwargs = SETTINGS[optimizer]
    opt = plan.optimizer(lr, model=model, **kwargs)
    clip = mutransfer.QKClip(plan.model, tau=1.0)
    res = mutransfer.train(model, opt, mutransfer.data.pycorpus(), steps=steps, batch_size=4,
                           seq_len=8, eval_batches=1, device="cpu", qk_clip=clip, warmup=1)
    return res, plan.model.state_dict()


@pytest.mark.parametrize("optimizer, backend", [("adamw", "eager"), ("muon", "eager"),
                                                ("adamw", "aot_eager")])
def test_a_compiled_model_trains_as_eager(optimizer, backend):
    eager, eager_weights = _run(optimizer, None)
    compiled, weights = _run(optimizer, backend)
    assert not compiled.diverged and compiled.history["max_logit"].notna().all()  # QK-Clip recorded
    for column in ("train_loss", "eval_loss", "grad_norm", "max_logit"):
        pd.testing.assert_series_equal(compiled.history[column], eager.history[column],
                                       rtol=1e-5, atol=1e-6)
    for key, value in eager_weights.items():
        torch.testing.assert_close(weights[key], value, rtol=1e-5, atol=1e-6,
                                   msg=lambda m, key=key: f"{key}: {m}")


def test_train_compile_true_compiles_the_target(tmp_path, monkeypatch):
    compiled = []
    real = torch.compile

    def compile_eagerly(model, **kwargs):  # inductor's cold build is too slow for a unit test
        compiled.append(model)
        return real(model, backend="eager")

    cfg = load_config(write_tiny_mlp(tmp_path))
    plan = TransferPlan(lr=0.01, lr_interval=(0.005, 0.02), batch_size=16, target_width=32,
                        scheme="mup", optimizer_name="adamw", base_width=8)
    eager = train_target(cfg, plan, device="cpu", progress=False).history
    monkeypatch.setattr(torch, "compile", compile_eagerly)
    res = train_target(cfg.override({"train.compile": True}), plan, device="cpu", progress=False)
    assert len(compiled) == 1 and math.isfinite(res.final_loss)
    for column in ("train_loss", "eval_loss", "grad_norm"):
        pd.testing.assert_series_equal(res.history[column], eager[column], rtol=1e-6, atol=1e-7)


def test_compile_must_be_a_bool(tmp_path):
    with pytest.raises(TypeError, match="compile must be True or False; got 'yes'"):
        wrap_model(torch.nn.Linear(2, 2), "none", compile="yes")
    path = write_tiny_mlp(tmp_path)
    path.write_text(path.read_text().replace("eval_batches = 1", 'eval_batches = 1\ncompile = "yes"'))
    with pytest.raises(ValueError, match=r"\[train\] compile must be a bool, got 'yes'"):
        load_config(path)


def test_a_compiled_runs_checkpoint_resumes_in_eager(tmp_path):
    """Checkpoints hold the bare model's names (no _orig_mod.), so compile may change on resume."""
    from mutransfer.training import Checkpoints

    def run(backend, folder, resume=False, stop_at=None):
        torch.manual_seed(0)
        plan = mutransfer.parametrize(GPT, width=32, base_width=16, scheme="mup", optimizer="muon",
                                      readout="multiplier")
        model = plan.model if backend is None else torch.compile(plan.model, backend=backend)
        lr, kwargs = SETTINGS["muon"]
        return mutransfer.train(model, plan.optimizer(lr, model=model, **kwargs),
                                mutransfer.data.pycorpus(), steps=6, batch_size=4, seq_len=8,
                                eval_batches=1, eval_every=3, device="cpu", warmup=1,
                                checkpoint=Checkpoints(folder, every=3, resume=resume),
                                callback=(lambda step, loss: step == stop_at) if stop_at else None)

    stopped = run("eager", tmp_path / "a", stop_at=3)
    assert stopped.steps == 3 and (tmp_path / "a" / "step-000003" / "meta.json").is_file()
    resumed = run(None, tmp_path / "a", resume=True).history.drop(columns="seconds")
    whole = run(None, tmp_path / "b").history.drop(columns="seconds")
    pd.testing.assert_frame_equal(resumed, whole, rtol=1e-6, atol=1e-7)

"""Many processes: a plan's optimizer on DDP, FSDP2 and compiled models against the same steps in
one process; `train` / `mutransfer train` on 2 gloo ranks against 1 process; the README's FSDP2
loop on 2 ranks; the errors for bad launches. The 2-rank work runs once per module (one fork of
two ranks) and each test checks its part of the results."""
from __future__ import annotations

import functools
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from ranks import free_port, run_ranks
from tiny import tiny_mlp_toml

import mutransfer
from mutransfer import zoo
from mutransfer.core._groups import plan_name
from mutransfer.projection._target import train_target
from mutransfer.projection._transfer import TransferPlan
from mutransfer.training import init_parallel, local_batch, wrap_model
from mutransfer.training._parallel import mean_over_ranks
from mutransfer.runs import load_config

ROOT = Path(__file__).resolve().parents[1]
GPT = functools.partial(zoo.gpt, depth=2, seq_len=8)
CONSTANTS = {"lr_hidden": 2.0, "init_input": 0.5, "lr_output": 0.5}
LR = {"adamw": 1e-2, "adam": 1e-2, "sgd": 0.1, "muon": 0.02}
MUON = {"adam_lr": 1e-3, "ns_dtype": torch.float32}  # fp32 Newton-Schulz: bf16 rounds apart
TAU = 1.0  # below the tiny GPT's largest max logits (1.1-1.4 at init): QK-Clip rescales some heads
# name -> (wrapping, optimizer, plan.optimizer kwargs, QK-Clip tau)
CASES = {
    "ddp-adamw": ("ddp", "adamw", {"weight_decay": 0.1}, None),
    "ddp-adam": ("ddp", "adam", {}, None),
    "ddp-sgd": ("ddp", "sgd", {"momentum": 0.9}, None),
    "ddp-muon": ("ddp", "muon", {**MUON, "weight_decay": 0.1}, None),
    "ddp-adamw-spectral-qkclip": ("ddp", "adamw", {"weight_decay": 0.1, "decay": "spectral"}, TAU),
    "ddp-muon-spectral-qkclip": ("ddp", "muon", {**MUON, "weight_decay": 0.1, "decay": "spectral"}, TAU),
    "compiled-ddp-adamw": ("compile+ddp", "adamw", {"weight_decay": 0.1}, None),
    "fsdp-adamw": ("fsdp", "adamw", {"weight_decay": 0.1}, None),
    "fsdp-adam": ("fsdp", "adam", {}, None),
    "fsdp-sgd": ("fsdp", "sgd", {"momentum": 0.9}, None),
    "fsdp-adamw-spectral": ("fsdp", "adamw", {"weight_decay": 0.1, "decay": "spectral"}, None),
    "fsdp-adamw-qkclip": ("fsdp", "adamw", {}, TAU),
    "fsdp-muon": ("fsdp", "muon", {**MUON, "weight_decay": 0.1}, None),
    "fsdp-muon-spectral-qkclip": ("fsdp", "muon", {**MUON, "weight_decay": 0.1, "decay": "spectral"}, TAU),
}


def _full(t: torch.Tensor) -> torch.Tensor:
    return (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().clone()


def wrapped_steps(case: str, rank: int = 0, world: int = 1, steps: int = 3) -> dict:
    """``steps`` steps of the tiny GPT (depth 2 on a base of 1: readout and residual hooks) under
    ``case``'s wrapping, each rank on its slice of one global batch; the full weights and losses.
    With world 1 and wrapping "none" it is the one-process reference."""
    wrapping, name, kwargs, tau = CASES[case] if world > 1 else ("none", *CASES[case][1:])
    torch.manual_seed(0)  # the model's own init: the same on every rank
    plan = mutransfer.parametrize(GPT, width=32, base_width=16, depth=2, base_depth=1,
                                  scheme="mup", optimizer=name, readout="multiplier",
                                  constants=CONSTANTS, seed=0)
    model = plan.model
    for block in model.blocks:
        # softmax ignores q . b_k (the same for every key), so its gradient is zero up to rounding,
        # which Adam scales to lr-sized steps of any sign (and QK-Clip's max logits see them)
        block.attn.k.bias.requires_grad_(False)
    if wrapping == "compile+ddp":
        model = torch.compile(wrap_model(model, "ddp"), backend="eager")
    elif wrapping != "none":
        model = wrap_model(model, wrapping)
    opt = plan.optimizer(LR[name], model=model, **kwargs)
    clip = mutransfer.QKClip(plan.model, TAU) if tau else None
    ids = torch.randint(0, 256, (4, 9), generator=torch.Generator().manual_seed(1))
    x, y = local_batch((ids[:, :-1], ids[:, 1:]), rank, world)
    losses, clipped = [], 0
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
        loss.backward()
        opt.step()
        opt.zero_grad()
        if clip is not None:
            clip.reduce_over_ranks_()
            clip.clip_()
            clipped += len(clip.factors)
        losses.append(mean_over_ranks([float(loss.detach())], torch.device("cpu"))[0])
    return {"weights": {k: _full(v) for k, v in plan.model.state_dict().items()},
            "losses": losses, "clipped": clipped}


def _all_cases(rank: int, world: int) -> dict:
    out = {}
    for case in CASES:
        try:
            out[case] = wrapped_steps(case, rank, world)
        except Exception as err:  # one case failing must not hide the others' results
            out[case] = f"{type(err).__name__}: {err}"
    return out


def _config(tmp: Path, name: str, parallel: str, optimizer: str = "adamw", extra: str = "") -> Path:
    text = tiny_mlp_toml(name).replace("eval_batches = 1", f'eval_batches = 2\nparallel = "{parallel}"{extra}')
    text = text.replace('optimizer = "adamw"', f'optimizer = "{optimizer}"')
    path = tmp / f"{name}.toml"
    path.write_text(text)
    return path


def _plan(optimizer: str = "adamw") -> TransferPlan:
    return TransferPlan(lr=0.01 if optimizer == "adamw" else 0.02, lr_interval=(0.005, 0.02),
                        batch_size=16, target_width=32, scheme="mup", optimizer_name=optimizer,
                        base_width=8, adam_lr=1e-3 if optimizer == "muon" else None)


# (name, parallel, optimizer, extra [train] lines) of the runs `train_target` makes on 2 ranks
TARGET_RUNS = [("ddp", "ddp", "adamw", "\ngrad_accum = 2"), ("fsdp", "fsdp", "adamw", ""),
               ("ddp-muon", "ddp", "muon", "")]


def _target_runs(rank: int, world: int, folder: str) -> dict:
    out = {}
    for name, parallel, optimizer, extra in TARGET_RUNS:
        cfg = load_config(Path(folder) / f"{name}.toml")
        res = train_target(cfg, _plan(optimizer), device="cpu", progress=False)
        out[name] = res.history
    return out


def _two_rank_work(rank: int, world: int, folder: str) -> dict:
    return {"cases": _all_cases(rank, world), "targets": _target_runs(rank, world, folder)}


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ranks")
    for name, parallel, optimizer, extra in TARGET_RUNS:
        _config(folder, name, parallel, optimizer, extra)
    results = run_ranks(_two_rank_work, world=2, folder=str(folder))
    return results[0], folder


@pytest.mark.parametrize("case", list(CASES))
def test_plan_optimizer_on_wrapped_models_equals_one_process(two_ranks, case):
    got = two_ranks[0]["cases"][case]
    assert not isinstance(got, str), got
    want = wrapped_steps(case)
    if CASES[case][3]:
        assert want["clipped"] > 0  # the clip acted, so its max over ranks is tested
    torch.testing.assert_close(got["losses"], want["losses"], rtol=1e-5, atol=1e-6)
    for key, value in want["weights"].items():
        torch.testing.assert_close(got["weights"][key], value, rtol=1e-5, atol=1e-6,
                                   msg=lambda m, key=key: f"{key}: {m}")


@pytest.mark.parametrize("name", [r[0] for r in TARGET_RUNS])
def test_train_target_on_two_ranks_equals_one_process(two_ranks, name, tmp_path):
    results, folder = two_ranks
    cfg = load_config(folder / f"{name}.toml").override({"train.parallel": "none"})
    optimizer = next(r[2] for r in TARGET_RUNS if r[0] == name)
    one = train_target(cfg, _plan(optimizer), device="cpu", progress=False).history
    two = results["targets"][name]
    assert len(two) == len(one) == cfg.train.steps
    for column in ("train_loss", "eval_loss", "grad_norm", "lr", "tokens"):
        pd.testing.assert_series_equal(two[column], one[column], rtol=1e-5, atol=1e-6, check_dtype=False)


def test_plan_names_of_wrapped_parameters():
    known = {"0.weight", "module.w", "blocks.0.attn.q.weight"}
    assert plan_name("module.0.weight", known) == "0.weight"  # DDP
    assert plan_name("_orig_mod.0.weight", known) == "0.weight"  # torch.compile
    assert plan_name("_orig_mod.module.0.weight", known) == "0.weight"  # compile(DDP(model))
    assert plan_name("module._orig_mod.0.weight", known) == "0.weight"  # DDP(compile(model))
    assert plan_name("blocks.0._checkpoint_wrapped_module.attn.q.weight", known) == "blocks.0.attn.q.weight"
    assert plan_name("module.w", known) == "module.w"  # the model's own child called "module"
    assert plan_name("module.module.w", known) == "module.w"
    assert plan_name("blocks.0.module.attn.q.weight", known) is None  # only leading parts go
    assert plan_name("extra.weight", known) is None


def test_a_parameter_outside_the_plan_is_still_named_when_wrapped():
    plan = mutransfer.parametrize(functools.partial(zoo.mlp, depth=2, in_dim=8, out_dim=4),
                                  width=32, base_width=8, scheme="mup")
    plan.model.add_module("extra", torch.nn.Linear(4, 4))
    compiled = torch.compile(plan.model, backend="eager")
    with pytest.raises(ValueError, match=r"\['_orig_mod.extra.bias', '_orig_mod.extra.weight'\] of "
                                         r"the model are not in the plan"):
        plan.optimizer(1e-3, model=compiled)


def test_torchrun_mutransfer_train_on_two_ranks(tmp_path):
    """The command the README shows: every rank trains its slice, rank 0 alone writes the report."""
    cfg = _config(tmp_path, "cli", "ddp", extra="\ncheckpoint_every = 5")
    (tmp_path / "plan.json").write_text(_plan().to_json())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}" + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={free_port()}", "-m", "mutransfer", "train", str(cfg),
           "--plan", str(tmp_path / "plan.json"), "--reports", str(tmp_path / "rep")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote ") == 1  # rank 0 only
    out = tmp_path / "rep" / "cli" / "train-w32"
    assert {p.name for p in out.iterdir()} == {"history.csv", "loss.png", "train.md", "checkpoints"}
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000005", "step-000010"]  # the newest 2 stay
    one = train_target(load_config(cfg).override({"train.parallel": "none", "train.checkpoint_every": None}),
                       _plan(), device="cpu", progress=False).history
    two = pd.read_csv(out / "history.csv")
    pd.testing.assert_series_equal(two["train_loss"], one["train_loss"], rtol=1e-5, atol=1e-6)
    pd.testing.assert_series_equal(two["eval_loss"], one["eval_loss"], rtol=1e-5, atol=1e-6)


def _recipe(rank: int, world: int, cwd: str) -> dict:
    from readme_blocks import readme_block

    os.chdir(cwd)  # where the recipe's relative reports/tokens-quickstart/data is
    namespace = {"__name__": "recipe"}
    exec(compile(readme_block("fully_shard(block)"), "README.md", "exec"), namespace)
    return {"loss": float(namespace["loss"].detach()), "vocab": namespace["data"].vocab,
            "rows": namespace["plan"].model.wte.weight.shape[0]}  # a DTensor: the global shape


def test_readme_fsdp_loop_runs_on_two_ranks(quickstart_tokens):
    """The recipe as written, on a tiny folder of tokens where the tokens quickstart prepares it."""
    results = run_ranks(_recipe, world=2, init_group=False, cwd=str(quickstart_tokens))
    assert all(r["vocab"] == r["rows"] == 300 for r in results)
    assert all(math.isfinite(r["loss"]) and r["loss"] < math.log(r["vocab"]) for r in results)


# --- bad launches ------------------------------------------------------------------------------

def test_unknown_parallel_names_the_choices(tmp_path):
    with pytest.raises(ValueError, match=r"\[train\] parallel must be one of none, ddp, fsdp, got 'zero3'"):
        load_config(_config(tmp_path, "bad", "zero3"))


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_ddp_or_fsdp_without_torchrun_says_how_to_launch(tmp_path, monkeypatch, parallel):
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ValueError, match=r"launch with `torchrun --nproc_per_node=N -m mutransfer train CONFIG`"):
        train_target(load_config(_config(tmp_path, "x", parallel)), _plan(), device="cpu", progress=False)
    with pytest.raises(ValueError, match="needs an initialised process group"):
        wrap_model(torch.nn.Linear(2, 2), parallel)


def test_parallel_none_under_torchrun_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="2 processes were launched but parallel='none'"):
        init_parallel("none", "cpu")


def test_train_refuses_a_model_not_wrapped_as_parallel_says():
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="parallel='ddp' but the model is wrapped in neither"):
        mutransfer.train(model, opt, mutransfer.data.synthetic(in_dim=4, out_dim=2), steps=1,
                         batch_size=4, seq_len=None, parallel="ddp")
    with pytest.raises(ValueError, match="unknown parallel 'zero'"):
        mutransfer.train(model, opt, mutransfer.data.synthetic(in_dim=4, out_dim=2), steps=1,
                         batch_size=4, seq_len=None, parallel="zero")


def test_local_batch_takes_each_ranks_rows_and_refuses_uneven_slices():
    x, y = torch.arange(8), torch.arange(8) * 10
    assert [local_batch((x, y), r, 4)[1].tolist() for r in range(4)] == [[0, 10], [20, 30], [40, 50], [60, 70]]
    assert local_batch(x, 0, 1) is x
    with pytest.raises(ValueError, match="a global batch of 8 examples does not split into 3 equal"):
        local_batch(x, 0, 3)
    from mutransfer.training._loop import _check_args

    with pytest.raises(ValueError, match="batch_size 16 does not split into 3 ranks x 2 micro-batches"):
        _check_args(mutransfer.data.synthetic(), 10, 16, 2, "cosine", 1.0, None, 1, False, None, world=3)

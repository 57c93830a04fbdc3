"""Coordinate check: records, slopes, verdict, plot and CLI (issue 4, scaling.md section 7)."""
from __future__ import annotations

import argparse
import functools

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from mutransfer import data, zoo
from mutransfer.cli import coord_check as command
from mutransfer.validation._coord_check import RECORD_COLUMNS, coord_check, module_roles
from mutransfer.validation._verdict import coord_slopes, coord_verdict, fit_slope
from mutransfer.core._parametrize import parametrize
from mutransfer.validation import plot_coord_check

WIDTHS = [64, 128, 256, 512]
SEEDS = (0, 1)
ADAMW_LR = command.DEFAULT_LR["adamw"]


@functools.lru_cache(maxsize=None)
def _gpt_setup():
    ds = data.pycorpus()
    g = torch.Generator().manual_seed(0)
    return functools.partial(zoo.gpt, depth=2, seq_len=32), [ds.batch("train", 4, 32, g) for _ in range(5)], ds


@functools.lru_cache(maxsize=None)
def _mlp_setup():
    ds = data.synthetic(in_dim=32, out_dim=10)
    g = torch.Generator().manual_seed(0)
    return functools.partial(zoo.mlp, depth=3), [ds.batch("train", 8, None, g) for _ in range(5)], ds


@functools.lru_cache(maxsize=None)
def _records(model: str, scheme: str, optimizer: str) -> pd.DataFrame:
    factory, batches, ds = _gpt_setup() if model == "gpt" else _mlp_setup()
    lr = command.DEFAULT_LR[optimizer]
    kwargs = {"adam_lr": command.DEFAULT_ADAM_LR} if optimizer == "muon" else {}
    return coord_check(factory, WIDTHS, batches, scheme=scheme, optimizer=optimizer, lr=lr,
                       seeds=SEEDS, data=ds, optimizer_kwargs=kwargs)


def _judged_slopes(df: pd.DataFrame) -> pd.DataFrame:
    s = coord_slopes(df)
    return s[s["role"].isin(["hidden", "output"]) & (s["step"] >= 1)]


# ---------------------------------------------------------------- must show (issue 4)


@pytest.mark.parametrize("model,optimizer", [("gpt", "adamw"), ("gpt", "muon"),
                                             ("mlp", "adamw"), ("mlp", "muon")])
def test_mup_passes_and_activations_stay_flat(model, optimizer):
    df = _records(model, "mup", optimizer)
    verdict = coord_verdict(df)
    assert verdict.passed, str(verdict)
    s = _judged_slopes(df)
    hidden = s[(s["role"] == "hidden") & s["kind"].isin(["out", "delta"])]
    assert len(hidden) and hidden["slope"].abs().max() <= 0.15
    update = s[(s["role"] == "output") & (s["kind"] == "update")]
    assert len(update) and update["slope"].abs().max() <= 0.15
    # logits may shrink with width (muP's 1/width readout init), never grow
    assert s[s["role"] == "output"]["slope"].max() <= 0.15


@pytest.mark.parametrize("model", ["gpt", "mlp"])
def test_sp_fails_at_the_same_lr(model):
    df = _records(model, "sp", "adamw")
    verdict = coord_verdict(df)
    assert not verdict.passed and not verdict.schemes["sp"].passed
    assert _judged_slopes(df)["slope"].max() >= 0.3
    assert verdict.schemes["sp"].worst_slope >= 0.3


def test_two_schemes_sp_is_the_baseline_and_logit_shrink_is_a_note():
    df = pd.concat([_records("gpt", "sp", "adamw"), _records("gpt", "mup", "adamw")])
    verdict = coord_verdict(df)
    assert verdict.passed  # muP decides; SP is reported
    assert verdict.schemes["mup"].passed and not verdict.schemes["sp"].passed
    assert set(verdict.worst["scheme"]) == {"sp", "mup"} and verdict.worst["failed"].any()
    shrink = verdict.notes[(verdict.notes["scheme"] == "mup") & (verdict.notes["step"] == 0)]
    assert (shrink["module"] == "readout").all() and (shrink["slope"] < -0.3).any()
    assert "reported, not a failure" in verdict.explanation and "sp+adamw (baseline) fails" in verdict.explanation
    assert list(verdict.table()["verdict"]) == ["FAIL", "PASS"]


def test_plot_is_written_and_non_trivial(tmp_path):
    from PIL import Image

    df = pd.concat([_records("mlp", "sp", "adamw"), _records("mlp", "mup", "adamw")])
    path = plot_coord_check(df, tmp_path / "sub" / "coord.png")
    assert path.stat().st_size > 50_000
    width, height = Image.open(path).size
    assert width > 1500 and height > 400  # 2 schemes x 6 steps side by side, 3 kinds stacked


# ---------------------------------------------------------------- records


def _tiny(width: int) -> nn.Module:
    return nn.Sequential(nn.Linear(6, width), nn.GELU(), nn.Linear(width, width), nn.Linear(width, 3))


def _tiny_batches(n=3):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(5, 6, generator=g), torch.randint(3, (5,), generator=g)) for _ in range(n)]


def test_records_are_tidy_with_roles_and_kinds():
    df = coord_check(_tiny, [8, 16], _tiny_batches(), lr=1e-2, steps=2, seeds=(0,))
    assert list(df.columns) == list(RECORD_COLUMNS)
    roles = dict(zip(df["module"], df["role"]))
    assert roles == {"0": "input", "1": "activation", "2": "hidden", "3": "output"}
    kinds = df.groupby("step")["kind"].agg(set)
    assert kinds[0] == {"out"} and kinds[2] == {"out", "delta", "update"}
    assert not (df[(df["module"] == "1")]["kind"] == "update").any()  # GELU owns no parameters
    assert (df["rms"] > 0).all() and len(df) == 2 * (4 + 2 * (4 + 4 + 3))


def test_user_step_fn_is_used_and_owns_the_step():
    calls = []

    def frozen_step(model, optimizer, batch):  # never updates: every change must be exactly 0
        calls.append(batch[0].shape)
        return torch.zeros(())

    df = coord_check(_tiny, [8, 16, 32], _tiny_batches(2), lr=1.0, steps=3, seeds=(0, 1),
                     step_fn=frozen_step)
    assert len(calls) == 3 * 2 * 3
    assert (df[df["kind"] != "out"]["rms"] == 0).all()
    slopes = coord_slopes(df)
    assert (slopes[slopes["kind"] == "delta"]["slope"] == 0).all()  # no change is flat


def test_probe_is_the_first_batch_and_modules_dict_sets_roles():
    seen = []

    def step(model, optimizer, batch):
        seen.append(batch)
        loss = nn.functional.cross_entropy(model(batch[0]), batch[1])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss

    batches = _tiny_batches(2)
    df = coord_check(_tiny, [8, 16], batches, lr=1e-2, steps=3, seeds=(0,), step_fn=step,
                     modules={"2": "hidden", "3": "output"})
    assert [b is batches[t % 2] for t, b in enumerate(seen[:3])] == [True] * 3
    assert set(df["module"]) == {"2", "3"}


def test_tied_embedding_is_input_and_readout_is_output():
    plan = parametrize(functools.partial(zoo.gpt, depth=1, seq_len=8, tied=True), width=32, base_width=16)
    roles = module_roles(plan.model, plan.roles)
    assert roles["wte"] == "input" and roles["readout"] == "output"
    assert roles["blocks.0.attn.q"] == "hidden" and roles["ln_f"] == "vector"
    assert roles["blocks.0.mlp.1"] == "activation"


def test_dropout_masks_match_across_probes():
    def with_dropout(width):
        return nn.Sequential(nn.Linear(6, width), nn.Dropout(0.5), nn.Linear(width, 3))

    df = coord_check(with_dropout, [8, 16], _tiny_batches(), lr=1.0, steps=2, seeds=(0,),
                     step_fn=lambda model, opt, batch: torch.zeros(()))
    assert (df[df["kind"] == "delta"]["rms"] == 0).all()


# ---------------------------------------------------------------- slopes and verdict


def test_fit_slope_known_lines():
    fit = fit_slope([64, 128, 256], [1.0, 2.0, 4.0])
    assert fit["slope"] == pytest.approx(1.0) and fit["r2"] == pytest.approx(1.0)
    assert fit["stderr"] == pytest.approx(0.0, abs=1e-12)
    assert np.isnan(fit_slope([64, 128], [1.0, float("nan")])["slope"])
    assert np.isnan(fit_slope([64, 128], [1.0, 2.0])["stderr"])


def _fake(slopes_by_module: dict[str, tuple[str, float]], scheme="mup", kinds=("out", "delta")):
    rows = []
    for module, (role, slope) in slopes_by_module.items():
        for w in WIDTHS:
            for step in (0, 1):
                for kind in kinds if step else ("out",):
                    rows.append((scheme, "adamw", w, 0, step, module, role, kind, (w / 64) ** slope))
    return pd.DataFrame(rows, columns=list(RECORD_COLUMNS))


def test_verdict_rules():
    assert coord_verdict(_fake({"h": ("hidden", 0.1), "act": ("activation", 2.0)})).passed
    assert not coord_verdict(_fake({"h": ("hidden", -0.2)})).passed
    assert coord_verdict(_fake({"r": ("output", -0.5)})).passed  # logits may shrink
    assert not coord_verdict(_fake({"r": ("output", 0.2)})).passed  # never grow
    growing_update = _fake({"r": ("output", 0.3)}, kinds=("update",))
    assert not coord_verdict(growing_update).passed
    shrinking_update = _fake({"r": ("output", -0.3)}, kinds=("update",))
    assert not coord_verdict(shrinking_update).passed  # the readout's own update must be flat
    diverged = _fake({"h": ("hidden", 0.0)})
    diverged.loc[diverged.index[-1], "rms"] = float("nan")
    assert not coord_verdict(diverged).passed
    assert coord_verdict(_fake({"h": ("hidden", 0.2)}), tol=0.25).passed


def test_verdict_on_slopes_equals_verdict_on_records():
    df = _fake({"h": ("hidden", 0.3), "r": ("output", -0.4)})
    a, b = coord_verdict(df), coord_verdict(coord_slopes(df))
    assert a.passed == b.passed and a.explanation == b.explanation


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("kwargs,error,match", [
    ({"widths": [64]}, ValueError, "at least 2 distinct"),
    ({"widths": [64, -1]}, ValueError, "positive ints"),
    ({"batches": []}, TypeError, r"list of \(x, y\) pairs"),
    ({"steps": 0}, ValueError, "steps must be an int >= 1"),
    ({"modules": ["nope"]}, ValueError, "unknown modules"),
    ({"modules": "2"}, TypeError, r"modules=\['2'\]"),
    ({"loss_fn": lambda o, y: o.sum(), "data": object()}, ValueError, "not both"),
])
def test_bad_arguments_name_the_fix(kwargs, error, match):
    args = {"widths": [8, 16], "batches": _tiny_batches(), "lr": 1e-2, "steps": 1, "seeds": (0,)}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        coord_check(_tiny, args.pop("widths"), args.pop("batches"), **args)


def test_verdict_errors():
    with pytest.raises(ValueError, match="tol must be a positive number"):
        coord_verdict(_fake({"h": ("hidden", 0.0)}), tol=0)
    with pytest.raises(ValueError, match="nothing to judge"):
        coord_verdict(_fake({"a": ("activation", 0.0)}))
    with pytest.raises(ValueError, match="lacks columns"):
        coord_slopes(pd.DataFrame({"width": [1]}))
    mixed = pd.concat([_fake({"h": ("hidden", 0.0)}), _fake({"h": ("hidden", 0.0)}).assign(optimizer="muon")])
    with pytest.raises(ValueError, match="one optimizer at a time"):
        coord_verdict(mixed)


# ---------------------------------------------------------------- CLI


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers())
    args = parser.parse_args(["coord-check", *argv])
    return args.func(args)


def test_cli_writes_csv_png_markdown_and_strict_exit(tmp_path, capsys):
    base = ["--model", "mutransfer.zoo:mlp", "--widths", "16,32,64", "--steps", "2", "--seeds", "1"]
    assert _cli([*base, "--out", str(tmp_path / "a"), "--strict"]) == 0
    printed = capsys.readouterr().out
    assert "PASS" in printed and "FAIL" in printed  # muP passes, the SP baseline fails
    for name in ("coord.csv", "coord.png", "coord.md"):
        assert (tmp_path / "a" / name).stat().st_size > 500
    md = (tmp_path / "a" / "coord.md").read_text()
    assert "mutransfer coord-check --model mutransfer.zoo:mlp" in md and "--strict" in md
    assert set(pd.read_csv(tmp_path / "a" / "coord.csv")["scheme"]) == {"sp", "mup"}
    # SP alone decides the verdict, and fails: --strict turns that into exit 1
    assert _cli([*base, "--schemes", "sp", "--out", str(tmp_path / "b"), "--strict"]) == 1


def _synthetic(scheme: str, rms_of_width) -> pd.DataFrame:
    """Records of one hidden module whose change follows ``rms_of_width`` at steps 1-2."""
    rows = [(scheme, "adamw", w, 0, step, "h", "hidden", kind, rms_of_width(w) if kind == "delta" else 1.0)
            for w in (32, 64, 128, 256) for step in (1, 2) for kind in ("out", "delta")]
    return pd.DataFrame(rows, columns=list(RECORD_COLUMNS))


@pytest.mark.parametrize("curve, verdict", [
    ({32: 1.6, 64: 1.0, 128: 0.95, 256: 0.92}, "PASS from width 64"),  # shrinks only at the smallest
    ({32: 2.0, 64: 1.5, 128: 1.1, 256: 0.8}, "FAIL"),  # shrinks everywhere
    ({32: 0.6, 64: 1.0, 128: 1.05, 256: 1.08}, "FAIL"),  # grows: never excused
    ({32: 1.0, 64: 1.0, 128: 1.02, 256: 1.0}, "PASS"),
])
def test_a_shrink_confined_to_the_smallest_widths_passes_from_the_next_width(curve, verdict):
    v = coord_verdict(_synthetic("spectral", curve.get))
    assert v.table()["verdict"].iloc[0] == verdict
    if verdict.startswith("PASS from"):
        assert "passes from width 64 on" in v.explanation and "finite-width effect" in v.explanation
    if verdict == "FAIL" and curve[32] < 1:
        assert "activations that grow with width" in v.explanation


def test_constants_on_the_command_line():
    from mutransfer.cli.coord_check import _constants

    assert _constants(["init_input=0.025", "lr_output=2"]) == {"init_input": 0.025, "lr_output": 2.0}
    with pytest.raises(ValueError, match="--constant takes NAME=VALUE, e.g. --constant init_input=0.025; got 'x'"):
        _constants(["x"])

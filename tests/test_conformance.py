"""Conformance suite: transformers architectures (from tiny configs, no downloads) and bare-Parameter
models parametrize with no overrides, get the expected role and fans for every parameter, keep
non-matrices off Muon, pass muP's coordinate check, and train under every scheme."""
from __future__ import annotations

import functools
import math

import pytest
import torch

pytest.importorskip("transformers")

from suite import IMAGE, NOT_MUON, SEQ, SUITE, WIDTHS  # noqa: E402

from mutransfer import data, parametrize  # noqa: E402
from mutransfer.validation._coord_check import coord_check  # noqa: E402
from mutransfer.validation._verdict import coord_verdict  # noqa: E402

BASE, WIDE = WIDTHS


@functools.lru_cache(maxsize=None)
def _plan(name: str, width: int, optimizer: str = "adamw"):
    return parametrize(SUITE[name].make, width=width, base_width=BASE, optimizer=optimizer)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", sorted(SUITE))
def test_every_parameter_gets_its_expected_role_with_no_overrides(name, width):
    plan = _plan(name, width)
    wrong = {n: (p.role, SUITE[name].expected(n)) for n, p in plan.params.items()
             if p.role != SUITE[name].expected(n)}
    assert wrong == {}
    assert plan.shape_only == []  # every role came from a module type or the traced forward


def test_fused_experts_get_per_expert_fans_and_muon_per_slice():
    plan = _plan("mixtral", WIDE, "muon")
    gate_up = plan.params["model.model.layers.0.mlp.experts.gate_up_proj"]  # (E, 2I, D)
    down = plan.params["model.model.layers.0.mlp.experts.down_proj"]  # (E, D, I)
    assert (gate_up.fan_in, gate_up.fan_out, gate_up.expert_dims) == (WIDE, 4 * WIDE, 1)
    assert (down.fan_in, down.fan_out, down.expert_dims) == (2 * WIDE, WIDE, 1)
    assert gate_up.optimizer == down.optimizer == "muon"
    assert gate_up.muon_alpha == pytest.approx(2.0) and down.muon_alpha == pytest.approx(math.sqrt(0.5))
    assert gate_up.lr_mult == 1.0 and gate_up.init_mult == pytest.approx((WIDE / BASE) ** -0.5)
    router = plan.params["model.model.layers.0.mlp.gate.weight"]  # width -> n_experts
    assert (router.role, router.fan_in, router.fan_out, router.optimizer) == ("output", WIDE, 4, "adamw")


def test_gpt2_conv1d_fans_are_read_in_its_in_out_layout():
    plan = _plan("gpt2", WIDE, "muon")
    c_fc = plan.params["model.transformer.h.0.mlp.c_fc.weight"]  # stored (in, out) = (D, 4D)
    assert (c_fc.shape, c_fc.fan_in, c_fc.fan_out) == ((WIDE, 4 * WIDE), WIDE, 4 * WIDE)
    assert c_fc.muon_alpha == pytest.approx(2.0)


@pytest.mark.parametrize("name", sorted(NOT_MUON))
def test_muon_only_updates_matrices_that_multiply_activations(name):
    plan = _plan(name, WIDE, "muon")
    for n in NOT_MUON[name]:
        assert plan.params[n].optimizer == "adamw", n
    muon = [n for n, p in plan.params.items() if p.optimizer == "muon"]
    assert muon and all(plan.params[n].kind in ("linear", "conv", "generic", "experts") for n in muon)
    optimizer = plan.optimizer(0.02)
    shapes = {tuple(p.shape) for g in optimizer.param_groups if g["use_muon"] for p in g["params"]}
    assert all(len(s) >= 2 for s in shapes)


def test_muon_steps_a_fused_expert_tensor_one_expert_at_a_time():
    from mutransfer.optim._muon import Muon, newton_schulz

    w = torch.nn.Parameter(torch.randn(3, 8, 5))
    w.grad = torch.randn(3, 8, 5)
    before = w.detach().clone()
    Muon([{"params": [w], "expert_dims": 1}], lr=1.0, momentum=0.0, nesterov=False,
         ns_dtype=torch.float32).step()
    expected = torch.stack([newton_schulz(w.grad[e], dtype=torch.float32) for e in range(3)])
    torch.testing.assert_close(before - w.detach(), expected)


def test_print_and_describe_show_the_role_source():
    plan = _plan("lens_style", WIDE)
    assert set(plan.table()["source"]) == {"usage"}
    assert "source" in str(plan).splitlines()[2]


# ---------------------------------------------------------------- coordinate check


def _prototype_images(n_batches: int, batch: int = 16):
    """A 10-class task: class c is prototype image c plus noise (the ViT's data)."""
    g = torch.Generator().manual_seed(0)
    protos = torch.randn(10, 3, IMAGE, IMAGE, generator=g)
    out = []
    for _ in range(n_batches):
        y = torch.randint(0, 10, (batch,), generator=g)
        out.append((protos[y] + 0.5 * torch.randn(batch, 3, IMAGE, IMAGE, generator=g), y))
    return out


@functools.lru_cache(maxsize=1)
def _corpus():
    return data.pycorpus()


def _batches(kind: str, n: int, batch: int):
    if kind == "image":
        return _prototype_images(n, batch)
    g = torch.Generator().manual_seed(0)
    return [_corpus().batch("train", batch, SEQ, g) for _ in range(n)]


@pytest.mark.parametrize("name", ["llama", "vit", "mixtral"])
def test_mup_passes_the_coordinate_check(name):
    case = SUITE[name]
    df = coord_check(case.make, [64, 128, 256, 512], _batches(case.data, 3, 8), scheme="mup",
                     lr=1e-3, steps=3, seeds=(0, 1, 2))
    verdict = coord_verdict(df)
    assert verdict.passed, str(verdict)


def test_sp_fails_the_same_coordinate_check():
    case = SUITE["llama"]
    df = coord_check(case.make, [64, 128, 256, 512], _batches(case.data, 3, 8), scheme="sp",
                     lr=1e-3, steps=3, seeds=(0, 1, 2))
    assert not coord_verdict(df).passed


# ---------------------------------------------------------------- every scheme trains

TRAIN_STEPS, TRAIN_LR, TRAIN_BATCH = 150, 1e-2, 16
# The bound: a byte model must end at least this far below the entropy of the corpus's byte
# frequencies (the loss of the best model that ignores context); the image model this far below
# log(10), the loss of guessing.
MARGIN = 0.25


@functools.lru_cache(maxsize=1)
def _byte_entropy() -> float:
    counts = torch.bincount(_corpus().train.long(), minlength=256).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())


@pytest.mark.parametrize("scheme", ["sp", "mup", "spectral"])
@pytest.mark.parametrize("name", sorted(SUITE))
def test_every_scheme_trains_every_suite_model(name, scheme):
    case = SUITE[name]
    torch.manual_seed(0)
    plan = parametrize(case.make, width=WIDE, base_width=BASE, scheme=scheme)
    optimizer = plan.optimizer(TRAIN_LR)
    losses = []
    for x, y in _batches(case.data, TRAIN_STEPS, TRAIN_BATCH):
        out = plan.model(x)
        loss = torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]).float(), y.reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    final = sum(losses[-10:]) / 10
    bound = (math.log(10) if case.data == "image" else _byte_entropy()) - MARGIN
    assert final < bound, f"{name} under {scheme}: final loss {final:.3f}, bound {bound:.3f}"

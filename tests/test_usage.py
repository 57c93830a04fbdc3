"""usage.py: how each parameter enters the forward, and roles from it (sources, fallback, errors)."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mutransfer import parametrize, zoo
from mutransfer.core._examples import default_example
from mutransfer.core._scaling import spectral_sigma
from mutransfer.core._roles import RoleWarning, infer_roles
from mutransfer.core._usage import Use, trace_usage


class Uses(nn.Module):
    """One parameter per way of being used."""

    def __init__(self, d: int = 6):
        super().__init__()
        self.wt = nn.Parameter(torch.randn(d, 5))  # x @ wt: (in, out)
        self.w_io = nn.Parameter(torch.randn(5, d))  # addmm(b, x, w_io): (in, out)
        self.b = nn.Parameter(torch.zeros(d))
        self.w_ein = nn.Parameter(torch.randn(d, 3, 4))  # einsum "btd,dhk->bthk"
        self.experts = nn.Parameter(torch.randn(2, 7, d))  # F.linear(x, experts[e]): (E, out, in)
        self.table = nn.Parameter(torch.randn(10, d))  # table[ids]
        self.pos = nn.Parameter(torch.randn(4, d))  # x + pos[:T]
        self.gain = nn.Parameter(torch.ones(3, d))  # x * gain[0]
        self.a_log = nn.Parameter(torch.randn(d, 2))  # exp(a_log)
        self.dw = nn.Parameter(torch.randn(d, 1, 3))  # depthwise conv

    def forward(self, ids):
        x = self.table[ids] + self.pos[: ids.shape[1]]  # (B, T, d)
        x = x * self.gain[0]
        y = x @ self.wt  # (B, T, 5)
        z = torch.addmm(self.b, y.reshape(-1, 5), self.w_io).view_as(x)
        e = torch.einsum("btd,dhk->bthk", z, self.w_ein).sum()
        f = F.linear(z, self.experts[1]).sum()
        g = F.conv1d(z.transpose(1, 2), self.dw, groups=z.shape[-1], padding=1).sum()
        return e + f + g + torch.exp(self.a_log).sum()


def test_trace_records_which_dims_contract_and_how_each_tensor_is_used():
    uses = trace_usage(Uses(), torch.zeros(2, 4, dtype=torch.long))
    assert uses["wt"] == [Use("matmul", (0,), (1,), (), "matmul")]
    assert uses["w_io"] == [Use("matmul", (0,), (1,), (), "addmm")]
    assert uses["b"] == [Use("add", op="addmm")]
    assert uses["w_ein"] == [Use("matmul", (0,), (1, 2), (), "einsum")]
    assert uses["experts"] == [Use("matmul", (2,), (1,), (0,), "linear")]
    assert uses["table"][0].kind == "lookup" and uses["table"][0].in_dims == (0,)
    assert [u.kind for u in uses["pos"]] == ["add"]
    assert [u.kind for u in uses["gain"]] == ["mul"]
    assert [u.kind for u in uses["a_log"]] == ["other"]
    assert [u.kind for u in uses["dw"]] == ["conv_dw"]
    assert Use("matmul", (2,), (1,), (0,)).fans((2, 7, 6)) == (6, 7, 2)


class Bare(nn.Module):
    """A bare positional (seq, width) table and an (in, out) readout: shape rules misread both."""

    def __init__(self, width: int):
        super().__init__()
        self.emb = nn.Embedding(16, width)
        self.pos = nn.Parameter(torch.randn(8, width))
        self.W_U = nn.Parameter(torch.randn(width, 16) / width ** 0.5)

    def example_input(self):
        return torch.zeros(1, 8, dtype=torch.long)

    def forward(self, ids):
        return (self.emb(ids) + self.pos[: ids.shape[1]]) @ self.W_U


def test_traced_roles_fix_what_shape_rules_get_wrong():
    with pytest.warns(RoleWarning) as record:
        shape = infer_roles(Untraceable(64), Untraceable(16), allow_shape_roles=True)
    messages = " | ".join(str(w.message) for w in record)
    assert "allow_shape_roles=True" in messages and "could not trace how parameters are used" in messages
    assert (shape["pos"].role, shape["W_U"].role) == ("output", "input")  # torch's (out, in) layout
    assert shape["pos"].source == shape["W_U"].source == "shape"
    traced = infer_roles(Bare(64), Bare(16), example=torch.zeros(1, 8, dtype=torch.long))
    assert (traced["pos"].role, traced["W_U"].role) == ("input", "output")
    assert (traced["W_U"].fan_in, traced["W_U"].fan_out) == (64, 16)
    assert traced["pos"].source == "usage" and traced["emb.weight"].source == "module"


class Untraceable(Bare):
    def forward(self, ids):
        if ids.sum() > 0:  # data-dependent control flow the example input cannot satisfy
            return super().forward(ids)
        raise RuntimeError("needs a nonzero token")


def test_an_untraceable_model_warns_with_the_reason_then_refuses_the_shape_guesses():
    with pytest.warns(RoleWarning, match=r"could not trace .*RuntimeError: needs a nonzero token.*"
                                         r"Pass example="):
        with pytest.raises(ValueError, match=r"cannot tell the role of 2 parameter\(s\).*pos \(8, 64\)"):
            parametrize(Untraceable, width=64, base_width=16)
    with pytest.warns(RoleWarning):
        plan = parametrize(Untraceable, width=64, base_width=16, allow_shape_roles=True)
    assert plan.shape_only == ["pos", "W_U"]


class NoExample(Bare):
    example_input = None


def test_without_an_example_the_roles_are_traced_on_an_input_built_from_the_model():
    plan = parametrize(NoExample(64), NoExample(16))
    assert plan.shape_only == [] and (plan.params["pos"].role, plan.params["W_U"].role) == ("input", "output")
    assert plan.traced_on == "built: token ids (2, 8) in [0, 16) for the first nn.Embedding 'emb'"
    assert parametrize(Bare, width=64, base_width=16).traced_on == "the model's example_input()"


def test_an_override_is_recorded_as_the_source():
    plan = parametrize(Bare, width=64, base_width=16, overrides={"pos": "vector"})
    assert plan.params["pos"].source == "override" and plan.params["W_U"].source == "usage"


def test_zoo_models_bring_their_example_input():
    assert default_example(zoo.gpt(width=32, seq_len=16)).shape == (2, 8)
    assert default_example(zoo.cnn(width=8)).shape == (2, 3, 8, 8)
    assert default_example(nn.Linear(2, 2)) is None


def test_a_tied_model_under_spectral_puts_every_table_at_the_readouts_base_sigma():
    def make(width):
        return zoo.gpt(width=width, seq_len=16, tied=True)  # vocab 256

    sigma = spectral_sigma(32, 256)  # the readout's absolute sigma at the base width
    for width in (32, 128):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            plan = parametrize(make, width=width, base_width=32, scheme="spectral", seed=0)
        named = dict(plan.model.named_parameters())
        for name in ("wte.weight", "wpe.weight"):  # the tied table and the positional one
            assert plan.params[name].init_std == pytest.approx(sigma)
            assert named[name].pow(2).mean().sqrt().item() == pytest.approx(sigma, rel=0.05)
        hidden = plan.params["blocks.0.mlp.0.weight"]  # the blocks keep spectral's absolute sigma
        assert hidden.init_std == pytest.approx(spectral_sigma(hidden.fan_in, hidden.fan_out))
        assert plan.readout_scales == ({} if width == 32 else {"readout": pytest.approx(0.25)})


def test_a_tied_model_under_mup_keeps_its_own_init_at_the_base():
    def make(width):
        return zoo.gpt(width=width, seq_len=16, tied=True)

    torch.manual_seed(0)
    own = make(32)
    torch.manual_seed(0)
    plan = parametrize(make, width=32, base_width=32, scheme="mup", seed=0)
    assert all(torch.equal(a, b) for a, b in zip(own.state_dict().values(), plan.model.state_dict().values()))
    assert plan.params["wte.weight"].init_std == pytest.approx(zoo.EMBEDDING_STD, rel=0.05)

"""parametrize(): roles, the scheme table, invariants at the base width, round trips, errors."""
from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from torch import nn

import mutransfer
from mutransfer import Plan, Role, parametrize
from mutransfer.core._scaling import ADAM_LR_EXPONENT, EPS_EXPONENT, INIT_EXPONENT, SGD_LR_EXPONENT


class Net(nn.Module):
    """Every role once: embedding (input), dense first layer (input), hidden, vector, output."""

    def __init__(self, width: int, tied: bool = False, vocab: int = 50):
        super().__init__()
        self.emb = nn.Embedding(vocab, width)
        self.dense_in = nn.Linear(8, width)
        self.hidden = nn.Linear(width, 2 * width)
        self.norm = nn.LayerNorm(2 * width)
        self.down = nn.Linear(2 * width, width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.temperature = nn.Parameter(torch.ones(()))
        if tied:
            self.head.weight = self.emb.weight

    def forward(self, ids, feats):
        h = self.emb(ids) + self.dense_in(feats)
        h = self.down(torch.relu(self.norm(self.hidden(h))))
        return self.head(h) * self.temperature


EXPECTED_ROLES = {
    "emb.weight": Role.INPUT, "dense_in.weight": Role.INPUT, "dense_in.bias": Role.VECTOR,
    "hidden.weight": Role.HIDDEN, "hidden.bias": Role.VECTOR, "norm.weight": Role.VECTOR,
    "norm.bias": Role.VECTOR, "down.weight": Role.HIDDEN, "down.bias": Role.VECTOR,
    "head.weight": Role.OUTPUT, "temperature": Role.FIXED,
}


def batch(n=4, vocab=50):
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, vocab, (n,), generator=g), torch.randn(n, 8, generator=g)


def slope(widths, values):
    return np.polyfit(np.log2(widths), np.log2(values), 1)[0]


def test_roles_inferred_for_every_parameter():
    plan = parametrize(Net, width=128, base_width=32)
    assert plan.roles == EXPECTED_ROLES


def test_roles_at_base_width_come_from_the_delta_model():
    plan = parametrize(Net, width=32, base_width=32)
    assert plan.roles == EXPECTED_ROLES
    assert (plan.table()[["init_mult", "lr_mult", "eps_mult", "width_mult"]] == 1.0).all().all()


@pytest.mark.parametrize("module,base,expected", [
    (nn.Conv2d(64, 64, 3), nn.Conv2d(16, 16, 3), {"weight": Role.HIDDEN, "bias": Role.VECTOR}),
    (nn.Conv1d(3, 64, 5), nn.Conv1d(3, 16, 5), {"weight": Role.INPUT, "bias": Role.VECTOR}),
    (nn.Conv3d(64, 4, 1), nn.Conv3d(16, 4, 1), {"weight": Role.OUTPUT, "bias": Role.FIXED}),
    (nn.RMSNorm(64), nn.RMSNorm(16), {"weight": Role.VECTOR}),
    (nn.MultiheadAttention(64, 4), nn.MultiheadAttention(16, 4),
     {"in_proj_weight": Role.HIDDEN, "in_proj_bias": Role.VECTOR,
      "out_proj.weight": Role.HIDDEN, "out_proj.bias": Role.VECTOR}),
])
def test_module_types_set_fans(module, base, expected):
    plan = parametrize(module, base)
    assert plan.roles == expected


def test_conv_fans_include_the_kernel():
    row = parametrize(nn.Conv2d(64, 32, 3), nn.Conv2d(16, 8, 3)).params["weight"]
    assert (row.fan_in, row.fan_out) == (64 * 9, 32)


def test_mha_packed_projection_counts_one_block():
    row = parametrize(nn.MultiheadAttention(64, 4), nn.MultiheadAttention(16, 4)).params["in_proj_weight"]
    assert (row.fan_in, row.fan_out, row.width_mult) == (64, 64, 4.0)


# --- the scheme table (scaling.md section 3), reproduced as log-log slopes --------------------

WIDTHS = [64, 128, 256, 512, 1024, 2048, 4096]


def _rows(optimizer, scheme="mup", muon_scale="spectral"):
    return [parametrize(Net, width=w, base_width=64, optimizer=optimizer, scheme=scheme,
                        muon_scale=muon_scale, device="meta").params for w in WIDTHS]


@pytest.mark.parametrize("optimizer,table", [("adamw", ADAM_LR_EXPONENT), ("adam", ADAM_LR_EXPONENT),
                                             ("sgd", SGD_LR_EXPONENT)])
def test_lr_eps_and_init_exponents_match_the_table(optimizer, table):
    rows = _rows(optimizer)
    for name, role in EXPECTED_ROLES.items():
        lr = slope(WIDTHS, [r[name].lr_mult for r in rows])
        init = slope(WIDTHS, [r[name].init_mult for r in rows])
        assert lr == pytest.approx(table[role], abs=1e-9), name
        assert init == pytest.approx(INIT_EXPONENT[role], abs=1e-9), name
        if optimizer != "sgd":
            eps = slope(WIDTHS, [r[name].eps_mult for r in rows])
            assert eps == pytest.approx(EPS_EXPONENT[role], abs=1e-9), name


def test_table_exponents_are_scaling_md_section_3():
    # the numbers in scaling.md, written out once more so that an edit of the table is noticed
    assert [INIT_EXPONENT[r] for r in Role] == [0, -0.5, -1, 0, 0]
    assert [ADAM_LR_EXPONENT[r] for r in Role] == [0, -1, -1, 0, 0]
    assert [SGD_LR_EXPONENT[r] for r in Role] == [1, 0, -1, 1, 0]
    assert [EPS_EXPONENT[r] for r in Role] == [-1, -1, 0, -1, 0]


@pytest.mark.parametrize("rule,exponent,dense_in", [("spectral", 0.0, 0.0), ("keller", 0.0, 0.0),
                                                     ("moonlight", -0.5, 0.0)])
def test_muon_matrices_keep_base_lr_and_get_alpha(rule, exponent, dense_in):
    """Under moonlight alpha = 0.2 sqrt(max fan) grows like sqrt(m): a hidden matrix's lr falls
    like m^-1/2 (its step keeps its size), while a dense input matrix's lr stays, so its step
    lr x alpha grows like sqrt(m) = sqrt(fan_out/fan_in), as the spectral condition wants."""
    rows = _rows("muon", muon_scale=rule)
    for name, want in (("hidden.weight", exponent), ("down.weight", exponent), ("dense_in.weight", dense_in)):
        assert rows[0][name].optimizer == "muon"
        assert slope(WIDTHS, [r[name].lr_mult for r in rows]) == pytest.approx(want, abs=1e-9)
    steps = [r["dense_in.weight"].lr_mult * r["dense_in.weight"].muon_alpha for r in rows]
    assert slope(WIDTHS, steps) == pytest.approx(0.5, abs=1e-9)  # every rule: sqrt(fan_out/fan_in)
    last = rows[-1]
    expected_alpha = {"spectral": math.sqrt(2.0), "keller": math.sqrt(2.0),
                      "moonlight": 0.2 * math.sqrt(2 * 4096)}[rule]
    assert last["hidden.weight"].muon_alpha == pytest.approx(expected_alpha)
    # embeddings, the readout and vectors stay on AdamW with Adam's multipliers
    for name in ("emb.weight", "head.weight", "norm.weight", "hidden.bias"):
        assert last[name].optimizer == "adamw"
        assert last[name].lr_mult == pytest.approx((64 / 4096) ** -ADAM_LR_EXPONENT[EXPECTED_ROLES[name]])


def test_spectral_alpha_slope_is_zero_for_square_and_half_for_down():
    rows = _rows("muon")
    assert slope(WIDTHS, [r["hidden.weight"].muon_alpha for r in rows]) == pytest.approx(0.0)
    assert rows[0]["down.weight"].muon_alpha == pytest.approx(math.sqrt(0.5))
    assert rows[0]["dense_in.weight"].muon_alpha == pytest.approx(math.sqrt(64 / 8))


def test_measured_init_std_follows_the_role_exponent():
    widths = [64, 128, 256, 512]
    stds = {n: [] for n in EXPECTED_ROLES}
    for w in widths:
        torch.manual_seed(0)
        model = parametrize(Net, width=w, base_width=64, scheme="mup", seed=0).model
        for n, p in model.named_parameters():
            stds[n].append(float(p.detach().pow(2).mean().sqrt()))
    for name in ("hidden.weight", "head.weight", "emb.weight"):
        expected = INIT_EXPONENT[EXPECTED_ROLES[name]]
        assert slope(widths, stds[name]) == pytest.approx(expected, abs=0.05), name


@pytest.mark.parametrize("name,fan_in,fan_out", [("hidden.weight", 256, 512), ("down.weight", 512, 256),
                                                  ("head.weight", 256, 50), ("emb.weight", 1, 256)])
def test_spectral_uses_the_absolute_sigma(name, fan_in, fan_out):
    model = parametrize(Net, width=256, base_width=64, scheme="spectral").model
    w = dict(model.named_parameters())[name].detach()
    sigma = math.sqrt(fan_out / fan_in) / (math.sqrt(fan_in) + math.sqrt(fan_out))
    assert float(w.pow(2).mean().sqrt()) == pytest.approx(sigma, rel=1e-5)


# --- invariants at the base width ------------------------------------------------------------

def _build(scheme, optimizer="adamw"):
    torch.manual_seed(3)
    return parametrize(Net, width=32, base_width=32, scheme=scheme, optimizer=optimizer)


@pytest.mark.parametrize("optimizer", ["adamw", "adam", "sgd"])
def test_mup_equals_sp_at_the_base_width(optimizer):
    mup, sp = _build("mup", optimizer), _build("sp", optimizer)
    torch.manual_seed(3)
    own = Net(32)
    for (n, a), b, c in zip(mup.model.named_parameters(), sp.model.parameters(), own.parameters()):
        assert torch.equal(a, b) and torch.equal(a, c), n
    ours = mup.optimizer(1e-2, weight_decay=0.1)
    cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}[optimizer]
    plain = cls(own.parameters(), lr=1e-2, weight_decay=0.1,
                **({} if optimizer == "sgd" else {"betas": (0.9, 0.95)}))
    ids, feats = batch()
    for _ in range(3):
        for model, opt in ((mup.model, ours), (own, plain)):
            opt.zero_grad()
            model(ids, feats).square().mean().backward()
            opt.step()
    for a, b in zip(mup.model.parameters(), own.parameters()):
        assert torch.equal(a, b)


def test_parametrize_twice_equals_once():
    base = Net(32)
    once = parametrize(Net(128), base)
    before = {n: p.detach().clone() for n, p in once.model.named_parameters()}
    twice = parametrize(once.model, base)
    for n, p in twice.model.named_parameters():
        assert torch.equal(p, before[n]), n
    assert twice.table().equals(once.table())
    # the factory form measures a seeded base, so repeated calls agree too
    a, b = (parametrize(Net, width=64, base_width=32).table() for _ in range(2))
    assert a.drop(columns="init_std").equals(b.drop(columns="init_std"))
    np.testing.assert_allclose(a["init_std"], b["init_std"], rtol=0, atol=0)


@pytest.mark.parametrize("readout", ["init", "zero", "multiplier"])
def test_readout_modes(readout):
    plan = parametrize(Net, width=128, base_width=32, readout=readout)
    head = plan.model.head.weight
    if readout == "zero":
        assert torch.count_nonzero(head) == 0
    elif readout == "multiplier":
        assert plan.readout_scales == {"head": pytest.approx(32 / 128)}
        assert plan.params["head.weight"].lr_mult == 1.0
    else:
        assert plan.readout_scales == {}
        assert plan.params["head.weight"].init_mult == pytest.approx(0.25)


def test_multiplier_form_scales_the_readout_input():
    plan = parametrize(Net, width=128, base_width=32, readout="multiplier", output_mult=2.0)
    model, (ids, feats) = plan.model, batch()
    with torch.no_grad():
        out = model(ids, feats)
        h = model.down(torch.relu(model.norm(model.hidden(model.emb(ids) + model.dense_in(feats)))))
        ref = nn.functional.linear(h * (2.0 * 32 / 128), model.head.weight) * model.temperature
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("readout_exponent", [-1.0, -0.5])
def test_multiplier_form_eps_follows_the_readout_gradient(readout_exponent):
    """The readout's gradient carries the logits' m^readout_exponent: its RMS falls with that
    slope across widths, and Adam's eps for it follows (eps 1 would swamp it at width)."""
    widths, rms, eps = (32, 64, 128, 256), [], []
    for width in widths:
        plan = parametrize(Net, width=width, base_width=32, readout="multiplier", seed=0,
                           constants={"readout_exponent": readout_exponent})
        ids, feats = batch()
        plan.model(ids, feats).logsumexp(-1).mean().backward()
        rms.append(plan.model.head.weight.grad.pow(2).mean().sqrt().item())
        eps.append(plan.params["head.weight"].eps_mult)
    assert slope(widths, eps) == pytest.approx(readout_exponent, abs=1e-9)
    assert slope(widths, rms) == pytest.approx(readout_exponent, abs=0.15)
    sgd = parametrize(Net, width=128, base_width=32, readout="multiplier", optimizer="sgd")
    assert sgd.params["head.weight"].eps_mult == 1.0  # no eps in SGD


def test_tied_weight_is_one_output_parameter_in_multiplier_form():
    plan = parametrize(functools.partial(Net, tied=True), width=128, base_width=32)
    assert "head.weight" not in plan.params
    row = plan.params["emb.weight"]
    assert (row.role, row.tied, row.init_mult, row.lr_mult) == ("output", True, 1.0, 1.0)
    assert plan.readout_scales == {"head": pytest.approx(0.25)}


def test_attention_scale_is_standard_at_base_and_mup_beyond():
    assert mutransfer.attention_scale(16, 16) == pytest.approx(1 / 4)
    assert mutransfer.attention_scale(64, 16) == pytest.approx(4 / 64)


# --- round trips -----------------------------------------------------------------------------

def test_plan_save_load_roundtrip(tmp_path):
    plan = parametrize(Net, width=64, base_width=32, optimizer="muon", readout="multiplier")
    plan.save(tmp_path / "plan.json")
    loaded = Plan.load(tmp_path / "plan.json")
    assert loaded.table().equals(plan.table())
    assert loaded.readout_scales == plan.readout_scales
    fresh = Net(64)
    loaded.apply_(fresh)
    ids, feats = batch()
    assert fresh.head._forward_pre_hooks and loaded.optimizer(0.01)


def test_state_dict_roundtrip_keeps_outputs():
    plan = parametrize(Net, width=64, base_width=32, readout="multiplier")
    other = parametrize(Net, width=64, base_width=32, readout="multiplier")
    other.model.load_state_dict(plan.model.state_dict())
    ids, feats = batch()
    torch.testing.assert_close(plan.model(ids, feats), other.model(ids, feats), rtol=0, atol=0)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd", "muon"])
def test_optimizer_state_dict_roundtrip(optimizer):
    def run(split):
        torch.manual_seed(0)
        plan = parametrize(Net, width=64, base_width=32, optimizer=optimizer)
        opt = plan.optimizer(1e-2, momentum=0.9 if optimizer == "sgd" else None)
        ids, feats = batch()
        for step in range(4):
            if step == 2 and split:
                state = opt.state_dict()
                opt = plan.optimizer(1e-2, momentum=0.9 if optimizer == "sgd" else None)
                opt.load_state_dict(state)
            opt.zero_grad()
            plan.model(ids, feats).square().mean().backward()
            opt.step()
        return [p.detach().clone() for p in plan.model.parameters()]

    for a, b in zip(run(False), run(True)):
        assert torch.equal(a, b)


def test_lr_scheduler_keeps_the_multipliers():
    plan = parametrize(Net, width=128, base_width=32)
    opt = plan.optimizer(1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5)
    opt.step()
    sched.step()
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(0.5 * 1e-2 * g["lr_mult"])


@pytest.mark.parametrize("policy,expected", [("fixed_product", 1e-3 * 0.1), ("coupled", 0.25 * 1e-3 * 0.1),
                                             ("independent", 0.1)])
def test_weight_decay_policies(policy, expected):
    plan = parametrize(Net, width=128, base_width=32)
    opt = plan.optimizer(1e-3, weight_decay=0.1, wd_policy=policy)
    hidden = next(g for g in opt.param_groups if g["role"] == "hidden")
    assert hidden["lr"] * hidden["weight_decay"] == pytest.approx(expected)


def test_eps_is_scaled_per_group():
    opt = parametrize(Net, width=128, base_width=32).optimizer(1e-3, eps=1e-8)
    eps = {g["role"]: g["eps"] for g in opt.param_groups}
    assert eps["hidden"] == pytest.approx(1e-8 / 4) and eps["output"] == pytest.approx(1e-8)


def test_torch_compile_still_trains():
    pytest.importorskip("torch._dynamo")
    plan = parametrize(Net, width=64, base_width=32, readout="multiplier")
    opt = plan.optimizer(1e-2)
    try:
        compiled = torch.compile(plan.model, backend="eager")
        ids, feats = batch()
        loss = compiled(ids, feats).square().mean()
    except Exception as exc:  # pragma: no cover - depends on the platform's dynamo support
        pytest.skip(f"torch.compile unsupported here: {exc}")
    loss.backward()
    opt.step()
    torch.testing.assert_close(compiled(ids, feats), plan.model(ids, feats))


def test_meta_model_and_base_cost_no_memory():
    with torch.device("meta"):
        model, base = Net(4096), Net(64)
    plan = parametrize(model, base, scheme="mup")
    assert plan.roles == EXPECTED_ROLES
    assert math.isnan(plan.params["hidden.weight"].init_std)


def test_describe_prints_the_table(capsys):
    from mutransfer.cli import main

    assert main(["describe", "mutransfer.zoo:mlp", "--width", "256", "--base-width", "64"]) == 0
    out = capsys.readouterr().out
    assert "hidden" in out and "lr_mult" in out


# --- bad input -------------------------------------------------------------------------------

class Other(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.a = nn.Linear(width, width)


@pytest.mark.parametrize("call,error,match", [
    (lambda: parametrize(Net(64), Other(32)), ValueError, "different parameter names"),
    (lambda: parametrize(Net(64), Net(32), scheme="mu-p"), ValueError, "unknown scheme 'mu-p'"),
    (lambda: parametrize(Net(64), Net(32), optimizer="lion"), ValueError, "unknown optimizer 'lion'"),
    (lambda: parametrize(Net(64), Net(32), muon_scale="x"), ValueError, "unknown muon_scale 'x'"),
    (lambda: parametrize(Net(64), Net(32), readout="none"), ValueError, "unknown readout 'none'"),
    (lambda: parametrize(Net(64), Net(32), overrides={"nope.*": "hidden"}), ValueError,
     r"override pattern\(s\) \['nope\.\*'\] match no parameter"),
    (lambda: parametrize(Net(64), Net(32), overrides={"temperature": "big"}), ValueError, "unknown role"),
    (lambda: parametrize(Net(32), Net(32)), ValueError, "Pass delta="),
    (lambda: parametrize(Net(64), Net(32), optimizer="muon", overrides={"norm.weight": "hidden"}),
     ValueError, r"'norm.weight' has shape \(128,\), but the hidden role \(and Muon\) needs a matrix"),
    (lambda: parametrize(lambda size: Net(size), width=64, base_width=32), TypeError,
     "does not accept the keyword 'width'"),
    (lambda: parametrize(Net, width=64), ValueError, "needs width= and base_width="),
    (lambda: parametrize(Net(64)), TypeError, "needs the base model"),
    (lambda: parametrize(Net(64), Net(32)).optimizer(0.0), ValueError, "lr must be > 0; got 0.0"),
    (lambda: parametrize(Net(64), Net(32)).optimizer(-1e-3), ValueError, "lr must be > 0"),
    (lambda: parametrize(Net(64), Net(32)).optimizer(1e-3, wd_policy="x"), ValueError, "unknown wd_policy"),
])
def test_bad_input_is_named_with_the_fix(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_overrides_beat_inference():
    plan = parametrize(Net(64), Net(32), overrides={"temperature": "vector", "down.w*": "output"})
    assert plan.roles["temperature"] is Role.VECTOR and plan.roles["down.weight"] is Role.OUTPUT


def test_meta_base_without_reset_parameters_is_reported():
    class Pos(nn.Module):
        def __init__(self, width):
            super().__init__()
            self.pos = nn.Parameter(torch.randn(4, width) * 0.02)
            self.lin = nn.Linear(width, width)

    with torch.device("meta"):
        base = Pos(16)
    with pytest.raises(ValueError, match=r"nothing re-initializes \['pos'\]"):
        parametrize(Pos(64), base, overrides={"pos": "input"})  # no forward to trace: the role is given


def test_muon_refuses_a_non_matrix_in_a_muon_group():
    from mutransfer.optim._muon import Muon

    with pytest.raises(ValueError, match="AdamW"):
        Muon([{"params": [nn.Parameter(torch.ones(3))], "use_muon": True}], lr=0.01)

"""Reference models: roles under parametrize at several widths, GPT heads/scale/causality/tying,
CNN inputs, and the factory-string loader."""
from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F

from mutransfer import data, parametrize, zoo
from mutransfer.core._scaling import attention_scale

ALL_ROLES = {"input", "hidden", "output", "vector"}
FACTORIES = {
    "gpt": (functools.partial(zoo.gpt, seq_len=16), ALL_ROLES),
    "gpt_tied": (functools.partial(zoo.gpt, seq_len=16, tied=True), ALL_ROLES),
    "gpt_fixed_d_head": (functools.partial(zoo.gpt, seq_len=16, d_head=8), ALL_ROLES),
    "mlp": (zoo.mlp, ALL_ROLES | {"fixed"}),  # fixed: the readout's out_dim-sized bias
    "cnn": (zoo.cnn, ALL_ROLES | {"fixed"}),
}
EXPECTED = {  # a few named parameters per model and their role
    "gpt": {"wte.weight": "input", "wpe.weight": "input", "blocks.0.attn.q.weight": "hidden",
            "blocks.1.mlp.2.weight": "hidden", "blocks.0.ln1.weight": "vector",
            "ln_f.bias": "vector", "readout.weight": "output"},
    "gpt_tied": {"wte.weight": "output", "wpe.weight": "input"},
    "mlp": {"0.weight": "input", "2.weight": "hidden", "4.weight": "output", "4.bias": "fixed"},
    "cnn": {"body.0.weight": "input", "body.2.weight": "hidden", "readout.weight": "output"},
}


@pytest.mark.parametrize("width", [32, 64, 128])
@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_every_model_gets_every_role_without_overrides(name, width):
    factory, roles = FACTORIES[name]
    plan = parametrize(factory, width=width, base_width=32)
    table = plan.table()
    assert not table["role"].isna().any()
    assert set(table["role"]) == roles
    assert len(table) == len(list(plan.model.parameters()))
    for param, role in EXPECTED.get(name, {}).items():
        assert plan.roles[param] == role, param


@pytest.mark.parametrize("width, d_head, heads, head_dim", [(64, None, 4, 16), (128, None, 4, 32),
                                                          (64, 8, 8, 8), (128, 8, 16, 8)])
def test_gpt_grows_d_head_or_head_count(width, d_head, heads, head_dim):
    attn = zoo.gpt(width, d_head=d_head).blocks[0].attn
    assert (attn.n_heads, attn.d_head) == (heads, head_dim)
    assert attn.scale == pytest.approx(attention_scale(head_dim, zoo.BASE_D_HEAD))
    sp = zoo.gpt(width, d_head=d_head, attention="sp").blocks[0].attn
    assert sp.scale == pytest.approx(1 / math.sqrt(head_dim))
    assert zoo.gpt(width, base_d_head=head_dim).blocks[0].attn.scale == pytest.approx(
        attention_scale(width // 4, head_dim))


def test_attention_matches_a_manual_causal_softmax():
    attn = zoo.gpt(32, n_heads=2, attention="mup").blocks[0].attn
    x = torch.randn(2, 5, 32)
    q, k, v = (p(x).view(2, 5, 2, 16).transpose(1, 2) for p in (attn.q, attn.k, attn.v))
    scores = (q @ k.transpose(-1, -2)) * (4 / 16)  # sqrt(BASE_D_HEAD=16) / d_head=16
    scores = scores.masked_fill(torch.ones(5, 5, dtype=torch.bool).triu(1), float("-inf"))
    y = (F.softmax(scores, -1) @ v).transpose(1, 2).reshape(2, 5, 32)
    torch.testing.assert_close(attn(x), attn.o(y), rtol=1e-5, atol=1e-6)


def test_gpt_is_causal_with_logits_per_position():
    model = zoo.gpt(32, seq_len=8)
    ids = torch.randint(0, 256, (2, 8))
    changed = ids.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % 256
    out, out2 = model(ids), model(changed)
    assert out.shape == (2, 8, 256)
    torch.testing.assert_close(out[:, :5], out2[:, :5])
    assert not torch.allclose(out[:, 5:], out2[:, 5:])


def test_tied_readout_shares_the_embedding():
    model = zoo.gpt(32, tied=True)
    assert model.readout.weight is model.wte.weight
    assert len(list(model.parameters())) == len(list(zoo.gpt(32).parameters())) - 1
    assert float(model.wte.weight.detach().std()) == pytest.approx(zoo.EMBEDDING_STD, rel=0.1)


def test_cnn_takes_images_and_flat_inputs():
    model = zoo.cnn(16, depth=3, in_channels=3, classes=7, image_size=8)
    images = data.synthetic("image", out_dim=7).batch("train", 4, None, torch.Generator(), "cpu")[0]
    assert model(images).shape == (4, 7)
    torch.testing.assert_close(model(images.flatten(1)), model(images))
    assert zoo.mlp(16, depth=2, in_dim=5, out_dim=3)(torch.zeros(2, 5)).shape == (2, 3)


@pytest.mark.parametrize("make, match", [
    (lambda: zoo.gpt(30), "width 30 is not a multiple of n_heads 4"),
    (lambda: zoo.gpt(64, d_head=12), "width 64 is not a multiple of d_head 12"),
    (lambda: zoo.gpt(64, n_heads=2, d_head=16), r"n_heads \* d_head = 2 \* 16 != width 64"),
    (lambda: zoo.gpt(64, attention="flash"), "unknown attention 'flash'"),
    (lambda: zoo.gpt(64, d_head=0), "d_head must be an integer >= 1; got 0"),
    (lambda: zoo.mlp(64, depth=1), "depth must be an integer >= 2; got 1"),
    (lambda: zoo.cnn(0), "width must be an integer >= 1; got 0"),
    (lambda: zoo.gpt(32, seq_len=4)(torch.zeros(1, 6, dtype=torch.long)), "sequence length 6 exceeds"),
])
def test_bad_model_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_load_factory_from_module_and_file(tmp_path):
    assert zoo.load_factory("mutransfer.zoo:gpt") is zoo.gpt
    path = tmp_path / "my_model.py"
    path.write_text("import torch\n\ndef make_model(width, depth=2):\n    return torch.nn.Linear(3, width)\n")
    factory = zoo.load_factory(f"{path}:make_model")
    assert factory(width=7).out_features == 7


@pytest.mark.parametrize("spec, error, match", [
    ("mutransfer.zoo", ValueError, "malformed.*'package.module:function'"),
    ("mutransfer.zoo:", ValueError, "malformed"),
    ("no/such/file.py:make_model", ValueError, "factory file 'no/such/file.py' not found"),
    ("mutransfer.zoo:transformer", ValueError, "has no attribute 'transformer'.*'gpt'"),
    ("mutransfer.nosuchmodule:f", ValueError, "cannot import module 'mutransfer.nosuchmodule'"),
    ("mutransfer.zoo:ATTENTIONS", TypeError, "not a callable factory"),
    ("mutransfer.zoo:load_factory", TypeError, "does not accept the keyword 'width'"),
])
def test_load_factory_errors(spec, error, match):
    with pytest.raises(error, match=match):
        zoo.load_factory(spec)

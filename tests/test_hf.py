"""mutransfer.hf: width families of transformers configs, forward-constant warnings, muP attention."""
from __future__ import annotations

import math
import warnings

import pytest
import torch

T = pytest.importorskip("transformers")

from mutransfer import parametrize  # noqa: E402
from mutransfer.core._roles import RoleWarning  # noqa: E402
from mutransfer.models.hf import (ForwardConstantWarning, family, forward_constants, mup_attention)
                                  # noqa: E402

T.logging.set_verbosity_error()


def _llama(**kw):
    base = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=1, head_dim=16, vocab_size=64, max_position_embeddings=32)
    return T.LlamaConfig(**{**base, **kw})


def test_family_scales_width_sizes_and_heads_at_a_fixed_head_dim():
    cfg = family(_llama(), 128)
    got = (cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads, cfg.num_key_value_heads,
           cfg.head_dim, cfg.vocab_size, cfg.max_position_embeddings, cfg.num_hidden_layers)
    assert got == (128, 256, 8, 4, 16, 64, 32, 1)
    with pytest.warns(ForwardConstantWarning, match="head dim grows"):
        heads = family(_llama(), 128, fixed="heads")
    assert (heads.num_attention_heads, heads.head_dim) == (2, 64)


def test_family_models_parametrize_with_no_overrides():
    plan = parametrize(lambda width: T.AutoModelForCausalLM.from_config(family(_llama(), width)),
                       width=128, base_width=32)
    assert plan.shape_only == [] and plan.params["lm_head.weight"].role == "output"


@pytest.mark.parametrize("width,bad", [(0, "width must be a positive integer"),
                                       (48, "num_key_value_heads=1 times the width ratio 1.5")])
def test_family_rejects_widths_that_do_not_scale_whole(width, bad):
    with pytest.raises(ValueError, match=bad):
        family(_llama(), width)


def test_forward_constants_name_gemma_t5_and_a_growing_head_dim():
    gemma = T.GemmaConfig(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_key_value_heads=1,
                          head_dim=16, num_hidden_layers=1, vocab_size=64)
    with pytest.warns(ForwardConstantWarning, match="sqrt\\(hidden_size\\)"):
        family(gemma, 64)
    t5 = T.T5Config(d_model=32, d_ff=64, d_kv=16, num_heads=2, num_layers=1, vocab_size=64)
    with pytest.warns(ForwardConstantWarning, match="d_model \\*\\* -0.5 before the tied head"):
        family(t5, 64)
    with pytest.warns(ForwardConstantWarning, match="head dim grows from 16 to 32"):
        family(_llama(), 64, fixed="heads")
    assert forward_constants(_llama(), family(_llama(), 64)) == []


def test_mup_attention_is_the_standard_scale_at_the_base_and_one_over_d_head_beyond():
    name = mup_attention(16)
    ids = torch.randint(0, 64, (1, 8), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    standard = T.AutoModelForCausalLM.from_config(_llama(), attn_implementation="sdpa")
    torch.manual_seed(0)
    mup = T.AutoModelForCausalLM.from_config(_llama(), attn_implementation=name)
    torch.testing.assert_close(mup(ids).logits, standard(ids).logits)  # d_head 16 = base

    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 8, 64, generator=g) for _ in range(3))
    module = torch.nn.Module()
    module.is_causal = False
    got, _ = ALL_ATTENTION_FUNCTIONS[name](module, q, k, v, None, scaling=64 ** -0.5)
    want, _ = sdpa_attention_forward(module, q, k, v, None, scaling=math.sqrt(16) / 64)
    torch.testing.assert_close(got, want)  # d_head 64: sqrt(16)/64, not 1/sqrt(64)
    wide = _llama(attn_implementation=name)
    assert forward_constants(_llama(), family(wide, 128, fixed="heads")) == []


def test_mup_attention_rejects_a_bad_base():
    with pytest.raises(ValueError, match="base_head_dim must be a positive integer; got 0"):
        mup_attention(0)


def _vit(width):
    return T.ViTForImageClassification(family(T.ViTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=8,
        patch_size=4, num_labels=10), width))


def _t5(width):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ForwardConstantWarning)
        cfg = family(T.T5Config(d_model=32, d_ff=64, d_kv=16, num_heads=2, num_layers=1, vocab_size=64,
                                decoder_start_token_id=0), width)
    return T.T5ForConditionalGeneration(cfg)


@pytest.mark.parametrize("make,name,role", [(_vit, "vit.embeddings.position_embeddings", "input"),
                                            (_t5, "shared.weight", "output")])
def test_transformers_models_are_traced_with_an_input_built_from_their_config(make, name, role):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RoleWarning)
        plan = parametrize(make, width=64, base_width=32)
    assert plan.shape_only == [] and plan.params[name].role == role


@pytest.mark.parametrize("model_type, heads_key", [("gpt2", "n_head"), ("llama", "num_attention_heads")])
def test_causal_lm_factory_grows_heads_at_a_fixed_head_dim_and_trains_from_a_toml(tmp_path, model_type, heads_key):
    from mutransfer.models.hf import causal_lm
    from mutransfer.runs import run_trial
    from mutransfer.runs import load_config

    small, wide = causal_lm(64, model_type=model_type), causal_lm(128, model_type=model_type)
    assert getattr(small.lm.config, heads_key) == 4 and getattr(wide.lm.config, heads_key) == 8
    # every attention projection is width x width: 16-dim heads (Llama's config keeps head_dim 128)
    attn = [p for n, p in wide.named_parameters() if n.endswith(("q_proj.weight", "c_attn.weight"))]
    assert attn and all(p.numel() == 128 * 128 * (3 if model_type == "gpt2" else 1) for p in attn)
    assert small(torch.zeros(2, 8, dtype=torch.long)).shape == (2, 8, 256)
    toml = tmp_path / "lm.toml"
    toml.write_text("\n".join([
        'name = "lm"', "[model]", 'factory = "mutransfer.hf:causal_lm"', "width = 128", "base_width = 64",
        f'kwargs = {{ model_type = "{model_type}" }}', "[data]", 'source = "pycorpus"',
        "[train]", "steps = 3", "batch_size = 2", "seq_len = 16", "eval_batches = 1",
        "[parametrization]", 'scheme = "spectral"', "[sweep]", "width = 64", "[sweep.space]",
        "lr = [0.001]", ""]))
    res = run_trial(load_config(toml), {"lr": 1e-3}, width=128, device="cpu", seed=0)
    assert math.isfinite(res.final_loss) and res.final_loss < 6.0  # ln 256 = 5.55 at the start


def test_causal_lm_rejects_a_head_dim_that_does_not_divide_the_base():
    from mutransfer.models.hf import causal_lm

    with pytest.raises(ValueError, match="base_width 64 is not a multiple of head_dim 24"):
        causal_lm(128, head_dim=24)

"""Width families of transformers models built from a config, and the forward constants that
break transfer (optional: ``pip install -e ".[hf]"``).

    >>> from transformers import AutoModelForCausalLM, LlamaConfig
    >>> plan = parametrize(lambda width: AutoModelForCausalLM.from_config(family(cfg, width)),
    ...                    width=256, base_width=64)

:func:`family` scales every width-like size of a config by ``r = width / hidden_size`` (hidden,
intermediate, expert intermediate, head counts at a fixed head dim, Mamba's ``time_step_rank``)
and keeps vocabulary, positions and depth. :func:`forward_constants` names the constants inside
the forward that grow with width, each with its fix; :func:`mup_attention` registers muP's
attention scale ``sqrt(d_head0) / d_head`` (scaling.md section 2) in transformers'
``AttentionInterface``, so a model uses it with no edit.
"""
from __future__ import annotations

import copy
import warnings

import torch

from mutransfer.core import example_input

__all__ = ["family", "forward_constants", "mup_attention", "example_input", "causal_lm",
           "ForwardConstantWarning"]

HIDDEN_KEYS = ("hidden_size", "n_embd", "d_model")
# sizes that grow with the hidden size (scaled by the same ratio)
WIDTH_KEYS = ("intermediate_size", "n_inner", "d_ff", "moe_intermediate_size",
              "shared_expert_intermediate_size", "encoder_ffn_dim", "decoder_ffn_dim", "time_step_rank")
# head counts: scaled by the ratio when the head dim stays fixed
HEAD_KEYS = ("num_attention_heads", "n_head", "num_heads", "num_key_value_heads",
             "encoder_attention_heads", "decoder_attention_heads")
HEAD_DIM_KEYS = ("head_dim", "d_kv", "attention_head_dim")
GEMMA_TYPES = ("gemma", "gemma2", "gemma3", "gemma3_text", "recurrent_gemma")
T5_TYPES = ("t5", "mt5", "umt5", "longt5")


class ForwardConstantWarning(UserWarning):
    """A width-dependent constant in a model's forward that breaks muP transfer."""


def _hidden_key(config) -> str:
    for key in HIDDEN_KEYS:
        if isinstance(getattr(config, key, None), int):
            return key
    raise ValueError(f"{type(config).__name__} has none of {HIDDEN_KEYS}; family() needs the "
                     f"config's hidden size (pass a transformers PretrainedConfig)")


def _scaled(key: str, value: int, ratio: float) -> int:
    new = value * ratio
    if abs(new - round(new)) > 1e-9 or round(new) < 1:
        raise ValueError(f"{key}={value} times the width ratio {ratio:g} is {new:g}, not a positive "
                         f"integer; pick a width for which every scaled size stays whole")
    return int(round(new))


DEPTH_KEYS = ("num_hidden_layers", "n_layer", "num_layers")


def family(config, width: int, *, fixed: str = "head_dim", depth: int | None = None):
    """A copy of a transformers ``config`` at hidden size ``width``.

    With ``r = width / hidden``: every key of ``WIDTH_KEYS`` present becomes ``key * r``; with
    ``fixed="head_dim"`` (default) the head counts ``HEAD_KEYS`` become ``heads * r`` and the head
    dim stays; with ``fixed="heads"`` the head counts stay and ``head_dim`` grows by ``r`` (then
    use :func:`mup_attention`). ``depth`` sets the number of layers (``num_hidden_layers`` or its
    model-specific name) for depth transfer; vocabulary, positions and everything else are kept.

        >>> family(LlamaConfig(hidden_size=64, num_attention_heads=4), 256).num_attention_heads
        16
    """
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive integer; got {width!r}")
    if fixed not in ("head_dim", "heads"):
        raise ValueError(f"fixed must be 'head_dim' or 'heads'; got {fixed!r}")
    key = _hidden_key(config)
    ratio = width / getattr(config, key)
    out = copy.deepcopy(config)
    setattr(out, key, width)
    for k in WIDTH_KEYS:
        value = getattr(config, k, None)
        if isinstance(value, int) and not isinstance(value, bool):
            setattr(out, k, _scaled(k, value, ratio))
    scale_keys = HEAD_KEYS if fixed == "head_dim" else HEAD_DIM_KEYS
    for k in scale_keys:
        value = getattr(config, k, None)
        if isinstance(value, int) and not isinstance(value, bool):
            setattr(out, k, _scaled(k, value, ratio))
    if depth is not None:
        _set_depth(out, depth)
    for message in forward_constants(config, out):
        warnings.warn(message, ForwardConstantWarning, stacklevel=2)
    return out


def _set_depth(config, depth: int) -> None:
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive integer; got {depth!r}")
    keys = [k for k in DEPTH_KEYS if isinstance(getattr(config, k, None), int)]
    if not keys:
        raise ValueError(f"{type(config).__name__} has none of {DEPTH_KEYS}; set its layer count "
                         f"yourself and pass depth=None")
    setattr(config, keys[0], depth)


def _head_dim(config) -> float | None:
    for k in HEAD_DIM_KEYS:
        value = getattr(config, k, None)
        if isinstance(value, int):
            return value
    heads = next((getattr(config, k) for k in HEAD_KEYS[:3] if isinstance(getattr(config, k, None), int)), None)
    hidden = next((getattr(config, k) for k in HIDDEN_KEYS if isinstance(getattr(config, k, None), int)), None)
    return hidden / heads if heads and hidden else None


def forward_constants(base_config, config) -> list[str]:
    """Messages naming each width-dependent constant in the forward of ``config``'s model that
    differs from ``base_config``'s, with the fix. Detected: Gemma's ``sqrt(hidden)`` embedding
    normalizer, T5's ``d_model ** -0.5`` rescale before a tied head, and an attention scale of
    ``1/sqrt(d_head)`` when ``d_head`` grows.

        >>> forward_constants(cfg, family(cfg, 256))
        []
    """
    key = _hidden_key(config)
    grows = getattr(config, key) != getattr(base_config, key)
    kind = getattr(config, "model_type", "")
    out = []
    if grows and kind in GEMMA_TYPES:
        out.append(f"{kind}: the embeddings are multiplied by sqrt(hidden_size) in the forward, so "
                   f"their output grows like sqrt(m) across widths; fix: divide the embedding init "
                   f"by sqrt(m) with parametrize(..., overrides=...) or scale it back with a forward "
                   f"hook on the embedding module (x / sqrt(hidden_size / base_hidden_size))")
    if grows and kind in T5_TYPES and getattr(config, "tie_word_embeddings", False):
        out.append(f"{kind}: the decoder output is rescaled by d_model ** -0.5 before the tied "
                   f"head, which shrinks the logits like m^-1/2 on top of muP's readout "
                   f"multiplier; fix: tie_word_embeddings=False, or parametrize with "
                   f"output_mult=sqrt(m) to cancel it")
    d, d0 = _head_dim(config), _head_dim(base_config)
    impl = getattr(config, "_attn_implementation", None) or ""
    if d and d0 and d != d0 and not impl.startswith("mup_") and kind not in T5_TYPES:
        out.append(f"{kind}: the head dim grows from {d0:g} to {d:g} and attention scales logits by "
                   f"1/sqrt(d_head); muP needs sqrt(d_head0)/d_head. Fix: "
                   f"from_config(cfg, attn_implementation=mutransfer.hf.mup_attention({d0:g})), "
                   f"or keep the head dim fixed (family(..., fixed='head_dim'))")
    return out


def mup_attention(base_head_dim: int, backend: str = "sdpa") -> str:
    """Register muP's attention (logits scaled by ``sqrt(base_head_dim) / d_head``) in
    transformers' ``AttentionInterface`` and return its name ``mup_<backend>_<base_head_dim>``.

    At ``d_head == base_head_dim`` it equals the standard ``1/sqrt(d_head)``.

        >>> name = mup_attention(16)
        >>> model = AutoModelForCausalLM.from_config(cfg, attn_implementation=name)
    """
    from transformers import AttentionInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    from mutransfer.core import attention_scale

    if isinstance(base_head_dim, bool) or not isinstance(base_head_dim, int) or base_head_dim < 1:
        raise ValueError(f"base_head_dim must be a positive integer; got {base_head_dim!r}")
    if backend not in ALL_ATTENTION_FUNCTIONS:
        raise ValueError(f"unknown attention backend {backend!r}; use one of "
                         f"{sorted(ALL_ATTENTION_FUNCTIONS.keys())}")
    inner = ALL_ATTENTION_FUNCTIONS[backend]

    def attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
        scale = attention_scale(query.size(-1), base_head_dim)
        return inner(module, query, key, value, attention_mask, scaling=scale, **kwargs)

    name = f"mup_{backend}_{base_head_dim}"
    AttentionInterface.register(name, attention)
    return name


# generic config names (transformers maps them onto each model's own, e.g. n_embd for GPT-2)
_SIZES = ("hidden_size", "num_attention_heads", "num_hidden_layers", "max_position_embeddings", "vocab_size")
_DROPOUTS = ("resid_pdrop", "embd_pdrop", "attn_pdrop", "attention_dropout", "hidden_dropout",
             "dropout", "hidden_dropout_prob", "attention_probs_dropout_prob")


def causal_lm(width: int, *, model_type: str = "gpt2", base_width: int = 64, head_dim: int = 16,
              depth: int = 2, seq_len: int = 64, vocab: int = 256, dropout: float = 0.0, **overrides):
    """A transformers causal LM of ``model_type`` built from its config (no download) at
    hidden size ``width``, for a TOML ``[model] factory = "mutransfer.hf:causal_lm"``.

    The base config has hidden size ``base_width``, ``base_width / head_dim`` heads, ``depth``
    layers, ``seq_len`` positions, a ``vocab``-token vocabulary (256: bytes), every dropout at
    ``dropout`` and ``overrides`` set on it; :func:`family` then scales it to ``width`` (heads grow,
    head dim fixed). The model's own init and tying are kept. The returned module maps token ids
    ``(B, T)`` to logits ``(B, T, vocab)`` (:class:`LogitsOf` around the model).

        >>> model = causal_lm(256, model_type="llama")          # a 16-head Llama, 2 layers
        >>> model(torch.zeros(2, 8, dtype=torch.long)).shape     # (2, 8, 256)
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    if base_width % head_dim:
        raise ValueError(f"base_width {base_width} is not a multiple of head_dim {head_dim}; pick "
                         f"a head_dim that divides it (e.g. {base_width // 4})")
    cfg = AutoConfig.for_model(model_type)
    sizes = dict(zip(_SIZES, (base_width, base_width // head_dim, depth, seq_len, vocab)))
    for key, value in {**sizes, **{k: dropout for k in _DROPOUTS if hasattr(cfg, k)}, **overrides}.items():
        setattr(cfg, key, value)
    for key in HEAD_DIM_KEYS:  # Llama's config keeps the head dim of its 4096-wide default
        if isinstance(getattr(cfg, key, None), int) and key not in overrides:
            setattr(cfg, key, head_dim)
    if hasattr(cfg, "num_key_value_heads"):
        cfg.num_key_value_heads = overrides.get("num_key_value_heads", cfg.num_attention_heads)
    if hasattr(cfg, "intermediate_size") and "intermediate_size" not in overrides:
        cfg.intermediate_size = 4 * base_width
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ForwardConstantWarning)  # fixed head dim: nothing grows
        return LogitsOf(AutoModelForCausalLM.from_config(family(cfg, width)))


class LogitsOf(torch.nn.Module):
    """A causal LM whose forward takes token ids ``(B, T)`` and returns only the logits.

        >>> LogitsOf(lm)(ids).shape      # lm(input_ids=ids).logits.shape
    """

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids):
        return self.lm(input_ids=input_ids).logits

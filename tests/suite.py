"""The conformance suite: transformers architectures built from tiny configs (no downloads) and two
hand-written models with bare Parameters, each as a factory ``width -> nn.Module`` whose forward
maps one input tensor to logits, plus the expected role of every parameter group.

Tests import it as ``from suite import ...`` after ``pytest.importorskip("transformers")``.

    >>> model = SUITE["llama"].make(width=64)
    >>> model(model.example_input()).shape
    torch.Size([2, 8, 256])
"""
from __future__ import annotations

import fnmatch
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
import transformers as T
from torch import nn

from mutransfer.models.hf import ForwardConstantWarning, family

T.logging.set_verbosity_error()
VOCAB, SEQ, HEAD_DIM = 256, 16, 16
IMAGE, PATCH, CLASSES = 8, 4, 10
WIDTHS = (32, 64)  # base and model: every suite model is checked at both


class Logits(nn.Module):
    """A transformers model as ``x -> logits``; ``call`` maps the input to the model's kwargs."""

    def __init__(self, model: nn.Module, call: Callable, example: Callable):
        super().__init__()
        self.model, self._call, self._example = model, call, example

    def example_input(self) -> torch.Tensor:
        return self._example()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(**self._call(x)).logits


def _ids() -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, 8), generator=torch.Generator().manual_seed(0))


def _images() -> torch.Tensor:
    return torch.randn(2, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(0))


def _lm(config_fn, cls=T.AutoModelForCausalLM, call=lambda x: {"input_ids": x}, example=_ids,
        known_warning: bool = False):
    def make(width: int) -> nn.Module:
        with warnings.catch_warnings():
            if known_warning:  # tested on its own in test_hf.py
                warnings.simplefilter("ignore", ForwardConstantWarning)
            cfg = family(config_fn(), width)
        model = cls.from_config(cfg) if cls is T.AutoModelForCausalLM else cls(cfg)
        return Logits(model, call, example)

    return make


def _llama():
    return T.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, head_dim=HEAD_DIM, vocab_size=VOCAB,
                         max_position_embeddings=64)


def _qwen2():
    return T.Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, vocab_size=VOCAB, max_position_embeddings=64)


def _mixtral():
    return T.MixtralConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           num_key_value_heads=1, head_dim=HEAD_DIM, vocab_size=VOCAB,
                           num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=64)


def _gpt2():
    return T.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=VOCAB, n_positions=64,
                        bos_token_id=0, eos_token_id=0)


def _bert():
    return T.BertConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                        vocab_size=VOCAB, max_position_embeddings=64)


def _t5():
    return T.T5Config(d_model=32, d_ff=64, d_kv=HEAD_DIM, num_layers=1, num_decoder_layers=1, num_heads=2,
                      vocab_size=VOCAB, decoder_start_token_id=0, pad_token_id=0)


def _vit():
    return T.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       image_size=IMAGE, patch_size=PATCH, num_labels=CLASSES)


def _mamba():
    return T.MambaConfig(hidden_size=32, num_hidden_layers=1, vocab_size=VOCAB, state_size=8)


class BarePositional(nn.Module):
    """A Llama-style toy whose positional table is a bare (seq, width) Parameter added to the
    residual stream: shape rules read it as an (out, in) readout."""

    def __init__(self, width: int):
        super().__init__()
        self.tok = nn.Embedding(VOCAB, width)
        self.pos = nn.Parameter(torch.randn(SEQ, width) * 0.02)
        self.up = nn.Linear(width, 4 * width)
        self.down = nn.Linear(4 * width, width)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, VOCAB, bias=False)

    def example_input(self) -> torch.Tensor:
        return _ids()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.tok(x) + self.pos[: x.shape[1]]
        h = h + self.down(torch.relu(self.up(self.norm(h))))
        return self.head(h)


class LensStyle(nn.Module):
    """TransformerLens-style: every weight a bare Parameter in (in, out) layout, used by ``@``,
    ``einsum`` and indexing (W_E[tokens], W_pos[:T])."""

    def __init__(self, width: int):
        super().__init__()
        d, g = width, lambda *s: nn.Parameter(torch.randn(*s) * s[0] ** -0.5)
        self.W_E, self.W_pos = nn.Parameter(torch.randn(VOCAB, d) * 0.02), nn.Parameter(torch.randn(SEQ, d) * 0.02)
        self.w_ln = nn.Parameter(torch.ones(d))
        self.W_in, self.b_in = g(d, 4 * d), nn.Parameter(torch.zeros(4 * d))
        self.W_out, self.b_out = g(4 * d, d), nn.Parameter(torch.zeros(d))
        self.W_U, self.b_U = g(d, VOCAB), nn.Parameter(torch.zeros(VOCAB))

    def example_input(self) -> torch.Tensor:
        return _ids()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.W_E[x] + self.W_pos[: x.shape[1]]
        n = h / h.pow(2).mean(-1, keepdim=True).add(1e-5).sqrt() * self.w_ln
        h = h + torch.relu(n @ self.W_in + self.b_in) @ self.W_out + self.b_out
        return torch.einsum("btd,dv->btv", h, self.W_U) + self.b_U


@dataclass(frozen=True)
class Case:
    """One suite model: its factory, its data (``bytes`` or ``image``) and expected roles as
    ordered (glob, role) pairs: the first glob matching a parameter name gives its role."""

    make: Callable[..., nn.Module]
    data: str
    roles: tuple[tuple[str, str], ...]

    def expected(self, name: str) -> str:
        for glob, role in self.roles:
            if fnmatch.fnmatchcase(name, glob):
                return role
        raise KeyError(f"no expected role for {name!r}")


DECODER = (("*embed_tokens.weight", "input"), ("*lm_head.weight", "output"), ("*norm*.weight", "vector"),
           ("*.bias", "vector"), ("*proj.weight", "hidden"))
SUITE = {
    "llama": Case(_lm(_llama), "bytes", DECODER),
    "qwen2": Case(_lm(_qwen2), "bytes", DECODER),
    "mixtral": Case(_lm(_mixtral), "bytes", (("*mlp.gate.weight", "output"),
                                             ("*experts.gate_up_proj", "hidden"),
                                             ("*experts.down_proj", "hidden")) + DECODER),
    "gpt2": Case(_lm(_gpt2), "bytes", (("*wte.weight", "output"), ("*wpe.weight", "input"),
                                       ("*.bias", "vector"), ("*ln_*.weight", "vector"),
                                       ("*.weight", "hidden"))),
    "bert": Case(_lm(_bert, T.BertForMaskedLM), "bytes", (
        ("*word_embeddings.weight", "output"), ("*position_embeddings.weight", "input"),
        ("*token_type_embeddings.weight", "input"), ("*cls.predictions.bias", "fixed"),
        ("*LayerNorm.*", "vector"), ("*.bias", "vector"), ("*.weight", "hidden"))),
    "t5": Case(_lm(_t5, T.T5ForConditionalGeneration,
                   call=lambda x: {"input_ids": x, "decoder_input_ids": x}, known_warning=True), "bytes", (
        ("*shared.weight", "output"), ("*relative_attention_bias.weight", "input"),
        ("*layer_norm.weight", "vector"), ("*.weight", "hidden"))),
    "vit": Case(_lm(_vit, T.ViTForImageClassification, call=lambda x: {"pixel_values": x},
                    example=_images), "image", (
        ("*cls_token", "vector"), ("*position_embeddings", "input"), ("*projection.weight", "input"),
        ("*classifier.weight", "output"), ("*classifier.bias", "fixed"), ("*.bias", "vector"),
        ("*layernorm*.weight", "vector"), ("*.weight", "hidden"))),
    "mamba": Case(_lm(_mamba), "bytes", (
        ("*embeddings.weight", "output"), ("*A_log", "vector"), ("*mixer.D", "vector"),
        ("*conv1d.weight", "vector"), ("*.bias", "vector"), ("*norm*.weight", "vector"),
        ("*proj.weight", "hidden"))),
    "bare_positional": Case(BarePositional, "bytes", (
        ("tok.weight", "input"), ("pos", "input"), ("head.weight", "output"), ("*.bias", "vector"),
        ("norm.weight", "vector"), ("*.weight", "hidden"))),
    "lens_style": Case(LensStyle, "bytes", (
        ("W_E", "input"), ("W_pos", "input"), ("W_U", "output"), ("b_U", "fixed"),
        ("W_in", "hidden"), ("W_out", "hidden"), ("b_*", "vector"), ("w_ln", "vector"))),
}
# parameters that must stay off Muon although they have >= 2 dims (tables, per-channel tensors)
NOT_MUON = {"vit": ("model.vit.embeddings.cls_token", "model.vit.embeddings.position_embeddings"),
            "mamba": ("model.backbone.layers.0.mixer.A_log", "model.backbone.layers.0.mixer.conv1d.weight"),
            "bare_positional": ("pos",), "lens_style": ("W_E", "W_pos", "W_U")}

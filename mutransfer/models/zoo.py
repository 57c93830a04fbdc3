"""Reference models: a small GPT, an MLP and a CNN, each a factory ``width -> nn.Module``.

They are ordinary modules with PyTorch's default init (exceptions noted per factory), so
:func:`mutransfer.parametrize` wraps them without edits. Which dims grow with ``width``:

| factory | scales with width                                   | fixed                          |
|---------|-----------------------------------------------------|--------------------------------|
| gpt     | d_model, MLP hidden (4 d), d_head (or n_heads)       | vocab, seq_len, depth          |
| mlp     | every hidden layer                                  | in_dim, out_dim, depth         |
| cnn     | every conv's channels                               | in_channels, classes, kernel 3 |

``load_factory`` resolves the factory strings of configs: ``"mutransfer.zoo:gpt"`` or
``"path/to/file.py:make_model"``.

    >>> model = gpt(width=128, depth=2)
    >>> logits = model(torch.zeros(2, 16, dtype=torch.long))   # (2, 16, 256)
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mutransfer.core import attention_scale
from mutransfer.core import check_choice

ATTENTIONS = ("mup", "sp")
NORMS = ("layer", "rms")  # LayerNorm (GPT-2) or RMSNorm (Llama)
MLPS = ("gelu", "swiglu")  # GELU(W1 x) (GPT-2) or SiLU(W1 x) * W3 x (Llama), both 4 x width wide
POSITIONS = ("learned", "rotary")  # a learned table added to the tokens (GPT-2) or rotary q, k (Llama)
INITS = ("torch", "normal")  # Linear weights: torch's uniform default, or N(0, 0.02) (GPT-2's and Llama's)
ROPE_BASE = 10000.0


def rotary(x: torch.Tensor, base: float = ROPE_BASE) -> torch.Tensor:
    """Rotary position embedding of ``x`` (batch, heads, time, d_head): each half-pair of channels
    rotated by angle t * base^(-i / (d/2)) (Llama's rotate-half form).

        >>> rotary(torch.randn(1, 2, 8, 16)).shape
        torch.Size([1, 2, 8, 16])
    """
    half = x.shape[-1] // 2
    freqs = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angle = torch.arange(x.shape[-2], device=x.device, dtype=torch.float32)[:, None] * freqs[None]
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:2 * half]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos, x[..., 2 * half:]], -1)
DEFAULT_N_HEADS = 4  # with d_head=None the head count stays 4 and d_head = width / 4 grows
# Reference head dim of the muP attention scale sqrt(BASE_D_HEAD) / d_head: any fixed value keeps
# the scale ~ 1/d_head across widths; at d_head == BASE_D_HEAD it equals SP's 1/sqrt(d_head).
BASE_D_HEAD = 16
EMBEDDING_STD = 0.02  # GPT-2's embedding init; torch's N(0, 1) gives O(sqrt(width)) tied logits


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with separate q, k, v, o projections."""

    def __init__(self, width: int, n_heads: int, d_head: int, scale: float, bias: bool = True,
                 rope: bool = False):
        super().__init__()
        self.n_heads, self.d_head, self.scale, self.rope = n_heads, d_head, scale, rope
        inner = n_heads * d_head
        self.q = nn.Linear(width, inner, bias=bias)
        self.k = nn.Linear(width, inner, bias=bias)
        self.v = nn.Linear(width, inner, bias=bias)
        self.o = nn.Linear(inner, width, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = (proj(x).view(b, t, self.n_heads, self.d_head).transpose(1, 2)
                   for proj in (self.q, self.k, self.v))
        if self.rope:
            q, k = rotary(q), rotary(k)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return self.o(y.transpose(1, 2).reshape(b, t, self.n_heads * self.d_head))


class SwiGLU(nn.Module):
    """Llama's MLP: ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, width: int, hidden: int, bias: bool = True):
        super().__init__()
        self.gate = nn.Linear(width, hidden, bias=bias)
        self.up = nn.Linear(width, hidden, bias=bias)
        self.down = nn.Linear(hidden, width, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


def _norm(kind: str, width: int, gains: bool) -> nn.Module:
    if kind == "rms":
        return nn.RMSNorm(width, elementwise_affine=gains)
    return nn.LayerNorm(width, elementwise_affine=gains)


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))`` (MLP 4x wide)."""

    def __init__(self, width: int, n_heads: int, d_head: int, scale: float, norm: str = "layer",
                 mlp: str = "gelu", bias: bool = True, norm_gains: bool = True, rope: bool = False):
        super().__init__()
        self.ln1 = _norm(norm, width, norm_gains)
        self.attn = CausalSelfAttention(width, n_heads, d_head, scale, bias, rope)
        self.ln2 = _norm(norm, width, norm_gains)
        self.mlp = (SwiGLU(width, 4 * width, bias) if mlp == "swiglu" else
                    nn.Sequential(nn.Linear(width, 4 * width, bias=bias), nn.GELU(), nn.Linear(4 * width, width, bias=bias)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Byte-level decoder: token + positional embedding, pre-LN blocks, final LayerNorm, readout."""

    def __init__(self, width: int, depth: int, n_heads: int, d_head: int, vocab: int, seq_len: int,
                 tied: bool, scale: float, **block):
        super().__init__()
        self.seq_len = seq_len
        self.wte = nn.Embedding(vocab, width)
        self.wpe = None if block.get("rope") else nn.Embedding(seq_len, width)
        self.blocks = nn.ModuleList(Block(width, n_heads, d_head, scale, **block) for _ in range(depth))
        self.ln_f = _norm(block.get("norm", "layer"), width, block.get("norm_gains", True))
        self.readout = nn.Linear(width, vocab, bias=False)
        for emb in (self.wte, self.wpe):
            if emb is not None:
                nn.init.normal_(emb.weight, std=EMBEDDING_STD)
        if tied:
            self.readout.weight = self.wte.weight

    def example_input(self, batch: int = 2) -> torch.Tensor:
        """Token ids (batch, min(8, seq_len)) for one forward (roles traced from usage)."""
        return torch.zeros(batch, min(8, self.seq_len), dtype=torch.long,
                           device=self.wte.weight.device)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        if t > self.seq_len:
            raise ValueError(f"sequence length {t} exceeds the model's seq_len {self.seq_len}; "
                             f"build it with gpt(..., seq_len={t}) or feed shorter windows")
        x = self.wte(ids)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(t, device=ids.device))
        for block in self.blocks:
            x = block(x)
        return self.readout(self.ln_f(x))


def _heads(width: int, n_heads: int | None, d_head: int | None) -> tuple[int, int]:
    for name, value in (("n_heads", n_heads), ("d_head", d_head)):
        if value is not None:
            _check_int(name, value, 1)
    if n_heads is not None and d_head is not None:
        if n_heads * d_head != width:
            raise ValueError(f"n_heads * d_head = {n_heads} * {d_head} != width {width}; "
                             f"give only one of them (the other follows from width)")
        return n_heads, d_head
    if d_head is not None:  # fixed head size: the head count grows with width
        if width % d_head != 0:
            raise ValueError(f"width {width} is not a multiple of d_head {d_head}; "
                             f"use a width divisible by d_head")
        return width // d_head, d_head
    n_heads = DEFAULT_N_HEADS if n_heads is None else n_heads
    if width % n_heads != 0:
        raise ValueError(f"width {width} is not a multiple of n_heads {n_heads}; "
                         f"use a width divisible by {n_heads} or pass d_head=")
    return n_heads, width // n_heads


def _check_int(name: str, value, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
    return value


def gpt(width: int, depth: int = 2, n_heads: int | None = None, d_head: int | None = None,
        vocab: int = 256, seq_len: int = 128, tied: bool = False, attention: str = "mup",
        base_d_head: int | None = None, attention_mult: float = 1.0, norm: str = "layer", mlp: str = "gelu",
        bias: bool = True, norm_gains: bool = True, positions: str = "learned", init: str = "torch") -> GPT:
    """A pre-LN GPT decoder mapping ids ``(B, T)`` to logits ``(B, T, vocab)``.

    Scaling dims: d_model = ``width``, MLP hidden ``4 * width``, and either d_head
    (default: ``n_heads`` stays 4, ``d_head = width / 4``) or, with ``d_head`` given, the head
    count ``width / d_head``. Attention ``softmax(q k^T * scale) v`` with
    ``scale = sqrt(base_d_head) / d_head`` (muP, :func:`mutransfer.attention_scale`;
    ``base_d_head`` default ``BASE_D_HEAD = 16``, so the scale is ``1/sqrt(16)`` at d_head 16 and
    ``~1/d_head`` across widths) or ``1/sqrt(d_head)`` for ``attention="sp"``, times
    ``attention_mult`` (a width-independent constant to tune on the proxy, scaling.md section 8).
    Init: torch defaults, except both embeddings ~ N(0, 0.02) (GPT-2). ``tied=True`` shares the
    token embedding with the readout (``readout.weight is wte.weight``). The block's parts, one at
    a time from GPT-2's toward Llama's (the depth ablations of reports/depth-ablation):
    ``norm`` "layer" or "rms", ``mlp`` "gelu" or "swiglu" (SiLU-gated, 4 x width wide), ``bias``
    in every linear map of the blocks, ``norm_gains`` trainable (else fixed at 1), ``positions``
    "learned" (a table) or "rotary" (q and k rotated, :func:`rotary`; no table), ``init`` of the
    Linear weights "torch" (uniform, torch's default) or "normal" (N(0, 0.02), as transformers'
    GPT-2 and Llama draw them; muP rescales either to its std, the draws keep their shape).

    Args:
        width: d_model. depth: number of blocks. vocab: 256 for byte corpora.
        seq_len: the context length (size of the positional embedding).

        >>> model = gpt(width=256, depth=2, seq_len=64)
        >>> model(torch.zeros(1, 64, dtype=torch.long)).shape
        torch.Size([1, 64, 256])
    """
    for name, value in (("width", width), ("depth", depth), ("vocab", vocab), ("seq_len", seq_len)):
        _check_int(name, value, 1)
    check_choice("attention", attention, ATTENTIONS)
    check_choice("norm", norm, NORMS)
    check_choice("mlp", mlp, MLPS)
    check_choice("positions", positions, POSITIONS)
    check_choice("init", init, INITS)
    for name, value in (("bias", bias), ("norm_gains", norm_gains)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False; got {value!r}")
    if isinstance(attention_mult, bool) or not isinstance(attention_mult, (int, float)) or not attention_mult > 0:
        raise ValueError(f"attention_mult must be a positive number (1 = the plain scale); got {attention_mult!r}")
    n_heads, d_head = _heads(width, n_heads, d_head)
    if attention == "mup":
        scale = attention_scale(d_head, BASE_D_HEAD if base_d_head is None else base_d_head)
    else:
        scale = d_head ** -0.5
    scale *= attention_mult
    model = GPT(width, depth, n_heads, d_head, vocab, seq_len, bool(tied), scale, norm=norm, mlp=mlp, bias=bias,
                norm_gains=norm_gains, rope=positions == "rotary")
    if init == "normal":
        for m in model.modules():
            if isinstance(m, nn.Linear) and m.weight is not model.wte.weight:
                nn.init.normal_(m.weight, std=EMBEDDING_STD)
    return model


def mlp(width: int, depth: int = 3, in_dim: int = 32, out_dim: int = 10) -> nn.Sequential:
    """``depth`` Linear layers with ReLU between: ``in_dim -> width -> ... -> width -> out_dim``.

    Scaling dims: every hidden layer's width. Init: torch's defaults.

        >>> model = mlp(width=128, depth=3, in_dim=32, out_dim=10)
        >>> model(torch.zeros(4, 32)).shape
        torch.Size([4, 10])
    """
    for name, value in (("width", width), ("in_dim", in_dim), ("out_dim", out_dim)):
        _check_int(name, value, 1)
    _check_int("depth", depth, 2)
    layers: list[nn.Module] = [nn.Linear(in_dim, width), nn.ReLU()]
    for _ in range(depth - 2):
        layers += [nn.Linear(width, width), nn.ReLU()]
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class CNN(nn.Module):
    """Conv body (3x3, ReLU), global average pooling, Linear readout."""

    def __init__(self, width: int, depth: int, in_channels: int, classes: int, image_size: int):
        super().__init__()
        self.image_shape = (in_channels, image_size, image_size)
        convs: list[nn.Module] = []
        for i in range(depth):
            convs += [nn.Conv2d(in_channels if i == 0 else width, width, 3, padding=1), nn.ReLU()]
        self.body = nn.Sequential(*convs)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.readout = nn.Linear(width, classes)

    def example_input(self, batch: int = 2) -> torch.Tensor:
        """Images (batch, C, S, S) for one forward (roles traced from usage)."""
        return torch.zeros(batch, *self.image_shape, device=self.readout.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # flat synthetic inputs of in_dim = C * S * S
            x = x.view(x.shape[0], *self.image_shape)
        return self.readout(self.pool(self.body(x)).flatten(1))


def cnn(width: int, depth: int = 2, in_channels: int = 3, classes: int = 10, image_size: int = 8) -> CNN:
    """A CNN for images ``(B, in_channels, S, S)``: ``depth`` 3x3 convs of ``width`` channels, global
    average pooling, Linear readout to ``classes``.

    Scaling dims: every conv's channel count (the first conv's fan_out, later convs' fans) and the
    readout's fan_in. Init: torch's defaults. Data: ``mutransfer.data.synthetic("image", ...)``
    gives 4-D images; flat inputs of size ``in_channels * image_size**2`` (e.g.
    ``synthetic("classification", in_dim=192)``) are reshaped to ``(in_channels, image_size,
    image_size)``.

        >>> model = cnn(width=32, depth=2)
        >>> model(torch.zeros(4, 3, 8, 8)).shape
        torch.Size([4, 10])
    """
    for name, value in (("width", width), ("depth", depth), ("in_channels", in_channels),
                        ("classes", classes), ("image_size", image_size)):
        _check_int(name, value, 1)
    return CNN(width, depth, in_channels, classes, image_size)


def load_factory(spec: str) -> Callable[..., nn.Module]:
    """Resolve a factory string: ``"package.module:function"`` (imported) or
    ``"path/to/file.py:function"`` (loaded by its path with an importlib spec; the file's folder
    goes at the *end* of ``sys.path``, so it may import its sibling modules while a sibling named
    like an installed or standard module, a ``json.py`` say, never shadows it for the rest of the
    process). The factory must accept ``width=``.

        >>> load_factory("mutransfer.zoo:gpt") is gpt
        True
    """
    from mutransfer.models._specs import load_object

    factory = load_object(spec, what="factory", example="make_model")
    _check_width_keyword(factory, spec)
    return factory


def _check_width_keyword(factory, spec: str) -> None:
    if not callable(factory):
        raise TypeError(f"{spec!r} is {type(factory).__name__}, not a callable factory; "
                        f"point it at a function width -> nn.Module")
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return  # builtins without a signature: the call itself will tell
    if "width" not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        raise TypeError(f"factory {spec!r} does not accept the keyword 'width' (its parameters: "
                        f"{list(params)}); define it as def make_model(width, ...) -> nn.Module")

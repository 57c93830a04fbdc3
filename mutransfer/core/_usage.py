"""How each parameter enters the forward pass, traced on one example input.

Shape alone cannot tell an additive table from a readout matrix: a (seq, width) tensor is a
positional table in one model and an unembedding in another. :func:`trace_usage` runs the model
once under a ``torch.overrides.TorchFunctionMode`` and records, for every parameter, each way
it is consumed:

| kind    | how it is used                                    | dims recorded                    |
|---------|---------------------------------------------------|----------------------------------|
| matmul  | weight of linear/matmul/einsum/addmm/conv         | in (contracted), out, expert     |
| lookup  | ``embedding`` or indexed by an integer tensor     | in (the indexed dim), out (rest) |
| add     | added to (or concatenated with) activations       | -                                |
| mul     | multiplied elementwise with activations (a gain)  | -                                |
| conv_dw | a depthwise conv weight (one input channel each)  | -                                |
| other   | anything else (``exp(A_log)``, a softmax, ...)    | -                                |

Views of a parameter (transpose, permute, ``.T``, slicing, ``w[expert]``, a dtype cast, a
scalar multiple, chunk) are followed back to the parameter's own dims, so ``x @ W.T``,
``F.linear(x, W[e])`` and ``torch.addmm(b, x, W)`` (GPT-2's Conv1D) each resolve to which of
W's dims contract with the activation. Dims removed by an integer index before a matmul are
expert (batch) dims: fused MoE tensors (E, out, in).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = ["Use", "TraceError", "trace_usage", "call_with"]


class TraceError(RuntimeError):
    """The model could not be run on the example input (the reason is the message)."""


@dataclass(frozen=True)
class Use:
    """One way a parameter is consumed: ``kind`` plus the parameter's own dims by part."""

    kind: str
    in_dims: tuple[int, ...] = ()
    out_dims: tuple[int, ...] = ()
    expert_dims: tuple[int, ...] = ()
    op: str = ""

    def fans(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        """(fan_in, fan_out, experts) of a tensor of ``shape`` used this way: products of the
        sizes of its in, out and expert dims.

            >>> Use("matmul", (2,), (1,), (0,)).fans((8, 64, 32))
            (32, 64, 8)
        """
        def size(dims):
            return math.prod(shape[d] for d in dims)

        return size(self.in_dims), size(self.out_dims), size(self.expert_dims)


@dataclass(frozen=True)
class _View:
    """A tensor derived from parameter ``name``: ``dims[i]`` is the parameter dim behind its
    dim i (None for a new dim); ``picked`` are parameter dims removed by an index."""

    name: str
    dims: tuple[int | None, ...]
    picked: tuple[int, ...] = ()
    indexed: bool = False  # picked by an integer tensor with >= 1 dim: a lookup


_MATMULS = {"_grouped_mm", "grouped_mm", "grouped_mm_fallback", "linear", "matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "addmm", "baddbmm",
            "addbmm", "addmv", "mv", "einsum", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
            "conv_transpose2d", "conv_transpose3d", "bilinear"}
_SAME = {"to", "type", "float", "half", "bfloat16", "double", "contiguous", "clone", "detach",
         "requires_grad_", "__get__:data", "expand", "expand_as", "broadcast_to", "neg", "__neg__"}
_TRANSPOSES = {"t", "__get__:T", "__get__:mT"}
_GROUPED = {"_grouped_mm", "grouped_mm", "grouped_mm_fallback"}
_METADATA = {"size", "dim", "numel", "stride", "is_contiguous", "data_ptr", "__len__", "__format__",
             "__repr__", "element_size", "storage_offset", "untyped_storage", "nelement", "ndimension",
             "get_device", "is_floating_point", "is_complex", "__hash__", "__bool__"}
_SCALAR_OPS = {"mul", "__mul__", "__rmul__", "div", "__truediv__", "__rtruediv__"}
_ADDS = {"add", "__add__", "__radd__", "sub", "__sub__", "__rsub__", "cat", "concat", "stack",
         "__iadd__", "add_"}
_GAINS = {"mul", "__mul__", "__rmul__", "__imul__", "mul_", "layer_norm", "rms_norm",
          "group_norm", "batch_norm"}


def _name(func) -> str:
    name = getattr(func, "__name__", "").split(".")[0]
    if name == "__get__":  # a property such as Tensor.T
        return "__get__:" + getattr(getattr(func, "__self__", None), "__name__", "")
    return name


class _Recorder(TorchFunctionMode):
    """Runs every torch function unchanged and records the ones a (view of a) parameter enters."""

    def __init__(self, params: dict[str, torch.Tensor]):
        super().__init__()
        self.views = {id(p): _View(n, tuple(range(p.ndim))) for n, p in params.items()}
        self.keep: list[torch.Tensor] = list(params.values())  # ids stay unique while tracing
        self.uses: dict[str, list[Use]] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        tracked = [a for a in _flat(args, kwargs) if id(a) in self.views]
        name = _name(func)
        metadata = name in _METADATA or (name.startswith("__get__:") and name not in _SAME
                                          and name not in _TRANSPOSES)  # .shape, .dtype, ...
        if tracked and not metadata:
            self._record(name, args, kwargs, out, tracked)
        return out

    def _use(self, view: _View, use: Use) -> None:
        uses = self.uses.setdefault(view.name, [])
        if use not in uses:
            uses.append(use)

    def _derive(self, out, view: _View) -> None:
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor):
                self.views[id(t)] = view
                self.keep.append(t)

    def _record(self, name, args, kwargs, out, tracked) -> None:
        derived = _derived_view(name, args, self.views[id(tracked[0])], out)
        if derived is not None and len(tracked) == 1:
            self._derive(out, derived)
            return
        for t in tracked:
            v = self.views[id(t)]
            self._use(v, _classify(name, args, kwargs, t, v))


def _flat(args, kwargs) -> list:
    flat = []
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, (list, tuple)):
            flat.extend(a)
        else:
            flat.append(a)
    return flat


def _is_scalar(x) -> bool:
    return isinstance(x, (int, float)) or (isinstance(x, torch.Tensor) and x.numel() == 1)


def _derived_view(name, args, view: _View, out) -> _View | None:
    """The view ``out`` is of the parameter, or None when ``name`` consumes it."""
    d = view.dims
    if name in _SAME:
        return view if isinstance(out, torch.Tensor) and out.ndim == len(d) else None
    if name in _SCALAR_OPS and len(args) == 2 and _is_scalar(args[1]) and not _is_scalar(args[0]):
        return view
    if name in _TRANSPOSES and len(d) >= 2:
        return _View(view.name, d[:-2] + (d[-1], d[-2]), view.picked, view.indexed)
    if name in ("transpose", "swapaxes", "swapdims"):
        i, j = (a % len(d) for a in args[1:3])
        dims = list(d)
        dims[i], dims[j] = dims[j], dims[i]
        return _View(view.name, tuple(dims), view.picked, view.indexed)
    if name == "permute":
        order = args[1] if isinstance(args[1], (tuple, list)) else args[1:]
        return _View(view.name, tuple(d[o % len(d)] for o in order), view.picked, view.indexed)
    if name in ("chunk", "split"):
        return view
    if name == "unsqueeze":
        i = args[1] % (len(d) + 1)
        return _View(view.name, d[:i] + (None,) + d[i:], view.picked, view.indexed)
    if name in ("view", "reshape", "squeeze", "flatten", "unflatten") and isinstance(out, torch.Tensor):
        return _reshaped(view, tuple(args[0].shape), tuple(out.shape))
    if name == "__getitem__":
        return _indexed(view, args[1], args[0].ndim)
    return None


def _reshaped(view: _View, before: tuple, after: tuple) -> _View | None:
    """A reshape that only adds or drops size-1 dims keeps the dims; others are consumed."""
    kept = [d for d, s in zip(view.dims, before) if s != 1]
    if [s for s in before if s != 1] != [s for s in after if s != 1]:
        return None
    it = iter(kept)
    return _View(view.name, tuple(next(it) if s != 1 else None for s in after), view.picked,
                 view.indexed)


def _indexed(view: _View, index, ndim: int) -> _View | None:
    index = index if isinstance(index, tuple) else (index,)
    n_real = sum(1 for i in index if i is not None and i is not Ellipsis)
    dims, picked, indexed, src = [], list(view.picked), view.indexed, 0
    for i in index:
        if i is Ellipsis:
            for _ in range(ndim - n_real):
                dims.append(view.dims[src])
                src += 1
        elif i is None:
            dims.append(None)
        elif isinstance(i, slice):
            dims.append(view.dims[src])
            src += 1
        elif isinstance(i, int) or (isinstance(i, torch.Tensor) and i.ndim == 0):
            if view.dims[src] is not None:
                picked.append(view.dims[src])
            src += 1
        elif isinstance(i, torch.Tensor) and i.dtype != torch.bool:
            if view.dims[src] is not None:
                picked.append(view.dims[src])
            dims.extend([None] * i.ndim)
            indexed, src = True, src + 1
        else:
            return None
    dims.extend(view.dims[src:])
    return _View(view.name, tuple(dims), tuple(picked), indexed)


def _known(dims) -> tuple[int, ...]:
    return tuple(sorted(d for d in dims if d is not None))


def _matmul_use(name, args, kwargs, t, v: _View) -> Use:
    d = v.dims
    if name == "einsum":
        return _einsum_use(args, t, v)
    if name in _GROUPED:  # (E, in, out) weights, tokens grouped by expert
        if t is not args[1]:
            return Use("other", op=name)
        return Use("matmul", _known(d[-2:-1]), _known(d[-1:]), v.picked + _known(d[:-2]), name)
    if name.startswith("conv"):
        if t is not (args[1] if len(args) > 1 else kwargs.get("weight")):
            return Use("add", op=name)  # the bias
        groups = args[6] if len(args) > 6 else kwargs.get("groups", 1)
        if groups > 1 and t.ndim >= 3 and t.shape[1] == 1:
            return Use("conv_dw", op=name)
        if "transpose" in name:
            return Use("matmul", _known(d[:1] + d[2:]), _known(d[1:2]), v.picked, name)
        return Use("matmul", _known(d[1:]), _known(d[:1]), v.picked, name)
    if name == "linear":
        if t is not (args[1] if len(args) > 1 else kwargs.get("weight")):
            return Use("add", op=name)  # the bias
        return Use("matmul", _known(d[-1:]), _known(d[:-1]), v.picked, name)
    operands = list(args)
    if name in ("addmm", "baddbmm", "addbmm", "addmv"):
        if t is operands[0]:
            return Use("add", op=name)
        operands = operands[1:3]
    if len(t.shape) == 1:
        return Use("matmul", _known(d), (), v.picked, name)
    if t is operands[-1] and t is not operands[0]:  # x @ W: W's dim -2 contracts
        return Use("matmul", _known(d[-2:-1]), _known(d[-1:]), v.picked + _known(d[:-2]), name)
    return Use("matmul", _known(d[-1:]), _known(d[-2:-1]), v.picked + _known(d[:-2]), name)


def _einsum_use(args, t, v: _View) -> Use:
    equation = args[0].replace(" ", "")
    operands = args[1] if len(args) == 2 and isinstance(args[1], (list, tuple)) else args[1:]
    lhs, _, rhs = equation.partition("->")
    terms = lhs.split(",")
    k = next(i for i, o in enumerate(operands) if o is t)
    mine = terms[k]
    if "..." in mine or not re.fullmatch(r"[a-zA-Z]*", mine):
        return Use("other", op="einsum")
    others = "".join(s for i, s in enumerate(terms) if i != k)
    if not rhs and "->" not in equation:
        rhs = "".join(sorted(c for c in set(lhs.replace(",", "")) if lhs.count(c) == 1))
    ins = tuple(i for i, c in enumerate(mine) if c in others and c not in rhs)
    outs = tuple(i for i, c in enumerate(mine) if c in rhs and c not in others)
    experts = tuple(i for i, c in enumerate(mine) if c in rhs and c in others)
    mapped = [_known(v.dims[i] for i in part) for part in (ins, outs, experts)]
    return Use("matmul", mapped[0], mapped[1], v.picked + mapped[2], "einsum")


def _classify(name, args, kwargs, t, v: _View) -> Use:
    if name in _MATMULS:
        use = _matmul_use(name, args, kwargs, t, v)
        if v.indexed and use.kind == "matmul" and not use.out_dims:
            # rows picked by token ids, then multiplied (W_E[ids] @ W): the pick is a lookup
            return Use("lookup", tuple(sorted(v.picked)), _known(v.dims), op=name)
        return use
    if name == "embedding":
        if t is (args[1] if len(args) > 1 else kwargs.get("weight")):
            return Use("lookup", _known(v.dims[:1]), _known(v.dims[1:]), op=name)
        return Use("other", op=name)
    if v.indexed:  # rows picked by token or position ids: a lookup table
        kept = _known(v.dims)
        return Use("lookup", tuple(sorted(v.picked)), kept, op=name)
    if name in _ADDS:
        return Use("add", op=name)
    if name in _GAINS:
        return Use("mul", op=name)
    return Use("other", op=name)


def call_with(model: nn.Module, example):
    """Run ``model`` on ``example``: a tensor, a tuple of positional args or a dict of kwargs.

        >>> call_with(nn.Linear(4, 2), torch.zeros(1, 4)).shape
        torch.Size([1, 2])
    """
    if isinstance(example, dict):
        return model(**example)
    if isinstance(example, (tuple, list)):
        return model(*example)
    return model(example)


def trace_usage(model: nn.Module, example) -> dict[str, list[Use]]:
    """Run ``model`` once on ``example`` (no grad) and return, per parameter name, every
    :class:`Use` seen. Parameters the forward never touches are absent.

    Raises :class:`TraceError` naming the reason when the forward fails.

        >>> uses = trace_usage(nn.Linear(4, 2), torch.zeros(1, 4))
        >>> uses["weight"][0].kind, uses["weight"][0].in_dims
        ('matmul', (1,))
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    recorder = _Recorder(dict(model.named_parameters()))
    try:
        with torch.no_grad(), recorder:
            call_with(model, example)
    except Exception as err:  # any failure of the user's forward: the caller falls back
        raise TraceError(f"{type(err).__name__}: {err}") from err
    return recorder.uses

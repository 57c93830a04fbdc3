"""Depth (scaling.md section 9): a model with more residual blocks than its base.

Blocks are matched by name with their index taken out: the model's block ``i`` is the base's
block ``i mod L0`` (a repeating pattern of block types keeps its period), and the depth ratio is
``m_L = L / L0``. Each block adds its branch to the residual stream, ``h <- h + F(h)``; the
branch's last map (the module whose output is added to the stream: an attention out-projection,
an MLP down-projection, a Mamba out_proj, a whole MoE layer) is found by tracing one forward,
and :class:`ResidualScale` multiplies its output by ``m_L ** -alpha`` at forward time, as the
readout's multiplier is applied, without editing the model.

    >>> depth = match_depth(gpt(width=64, depth=8), gpt(width=64, depth=2))
    >>> depth.ratio, depth.base_name("blocks.5.attn.q.weight")
    (4.0, 'blocks.1.attn.q.weight')
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

_BLOCK_LISTS = (nn.ModuleList, nn.Sequential)


@dataclass(frozen=True)
class Depth:
    """The model's block lists that hold more blocks than the base's, and how they match."""

    containers: tuple[str, ...]  # module paths of the block lists that grow
    depth: int  # blocks per list in the model (L)
    base_depth: int  # blocks per list in the base (L0)

    @property
    def ratio(self) -> float:
        """m_L = L / L0."""
        return self.depth / self.base_depth

    def _split(self, name: str) -> tuple[str, int, str] | None:
        for c in self.containers:
            m = re.fullmatch(rf"{re.escape(c)}\.(\d+)(\..*)?" if c else r"(\d+)(\..*)?", name)
            if m:
                return c, int(m.group(1)), m.group(2) or ""
        return None

    def block_of(self, name: str) -> int | None:
        """The block index of a parameter or module name, None outside the block lists."""
        found = self._split(name)
        return None if found is None else found[1]

    def base_name(self, name: str) -> str:
        """The base's name of the model's parameter or module ``name`` (block ``i`` -> ``i mod L0``)."""
        found = self._split(name)
        if found is None:
            return name
        c, i, rest = found
        return f"{c}{'.' if c else ''}{i % self.base_depth}{rest}"

    def model_names(self, base_name: str) -> list[str]:
        """Every model name that maps to ``base_name`` (one per repetition of its block)."""
        found = self._split(base_name)
        if found is None:
            return [base_name]
        c, b, rest = found
        return [f"{c}{'.' if c else ''}{i}{rest}" for i in range(b, self.depth, self.base_depth)]


def _block_lists(model: nn.Module) -> dict[str, int]:
    """Module path -> length of every ModuleList / Sequential of >= 1 child module."""
    return {name: len(m) for name, m in model.named_modules()
            if isinstance(m, _BLOCK_LISTS) and len(m) > 0}


def match_depth(model: nn.Module, base: nn.Module) -> Depth | None:
    """The depth change from ``base`` to ``model``: None when every block list has the same
    length; a :class:`Depth` when some grow by one integer ratio; else a ValueError naming the
    lists and the fix.

        >>> match_depth(gpt(width=64, depth=4), gpt(width=32, depth=2)).ratio
        2.0
    """
    ours, theirs = _block_lists(model), _block_lists(base)
    grown = {n: (ours[n], theirs[n]) for n in ours if n in theirs and ours[n] != theirs[n]}
    # lists nested in a grown block belong to that block (its MLP's Sequential, say)
    grown = {n: v for n, v in grown.items()
             if not any(n.startswith(f"{g}.") for g in grown if g != n)}
    if not grown:
        return None
    pairs = set(grown.values())
    if len(pairs) > 1:
        raise ValueError(f"block lists grow by different depths {sorted(grown.items())}; give every "
                         f"list of the model the same depth ratio to the base's, or parametrize "
                         f"with a base of the model's own depth")
    (depth, base_depth), = pairs
    if depth < base_depth or depth % base_depth:
        names = sorted(grown)
        raise ValueError(f"the model has {depth} blocks in {names} and the base {base_depth}: the "
                         f"base's depth must divide the model's (block i is matched to base block "
                         f"i mod {base_depth}); build the base with a depth that divides {depth}, "
                         f"e.g. {max(d for d in range(1, base_depth + 1) if depth % d == 0)}")
    return Depth(tuple(sorted(grown)), depth, base_depth)


class ResidualScale:
    """Forward hook multiplying a residual branch's output by ``scale`` (``m_L ** -alpha``); a
    tuple output (an attention layer's) has its first element scaled. A class, so it pickles.

        >>> model.blocks[0].attn.o.register_forward_hook(ResidualScale(0.25))
    """

    def __init__(self, scale: float):
        self.scale = float(scale)

    def __call__(self, module: nn.Module, args: tuple, output):
        if isinstance(output, tuple):
            return (output[0] * self.scale,) + tuple(output[1:])
        return output * self.scale

    def __repr__(self) -> str:
        return f"ResidualScale({self.scale:g})"


def set_residual_hooks(model: nn.Module, scales: dict[str, float]) -> None:
    """Remove every :class:`ResidualScale` hook of ``model`` and register ``scales`` (module name
    -> scale); parametrizing twice leaves one hook per branch."""
    modules = dict(model.named_modules(remove_duplicate=False))
    for module in modules.values():
        for key, hook in list(module._forward_hooks.items()):
            if isinstance(hook, ResidualScale):
                del module._forward_hooks[key]
    missing = sorted(set(scales) - set(modules))
    if missing:
        raise ValueError(f"the plan scales residual branches {missing[:4]} that the model lacks; "
                         f"apply the plan to the model it was made for")
    for name, scale in scales.items():
        modules[name].register_forward_hook(ResidualScale(scale))


class _BranchTracer(TorchFunctionMode):
    """Tags each activation with the innermost module that produced it (through ops with a single
    tagged input) and records, per block, the tag of every tensor added to its residual stream:
    the block's input, then each sum with it, inside the block's forward or after it returns
    (a parent that writes ``h = h + block(h)``)."""

    def __init__(self, model: nn.Module, blocks: dict[str, nn.Module]):
        super().__init__()
        self.tags: dict[int, str] = {}
        self.keep: list[torch.Tensor] = []
        self.stream: dict[int, str] = {}  # id of a residual-stream tensor -> its block
        self.ends: dict[str, list[str]] = {b: [] for b in blocks}
        self.untagged: dict[str, int] = {b: 0 for b in blocks}
        self.handles = []
        names = {id(m): n for n, m in model.named_modules()}
        block_ids = {id(m): n for n, m in blocks.items()}
        for module in model.modules():
            name = names[id(module)]
            self.handles.append(module.register_forward_hook(self._tagger(name)))
            if id(module) in block_ids:
                self.handles.append(module.register_forward_pre_hook(self._enter(name), with_kwargs=True))

    def close(self) -> None:
        for h in self.handles:
            h.remove()

    def _tag(self, t, name: str, force: bool) -> None:
        if isinstance(t, torch.Tensor) and (force or id(t) not in self.tags):
            self.tags[id(t)] = name
            self.keep.append(t)

    def _tagger(self, name: str):
        def hook(module, args, output):
            own = any(True for _ in module.parameters(recurse=False))
            first = output[0] if isinstance(output, (tuple, list)) and output else output
            self._tag(first, name, force=own)  # a container only names what no inner module did
        return hook

    def _enter(self, name: str):
        def hook(module, args, kwargs):
            x = args[0] if args else next((v for v in kwargs.values() if isinstance(v, torch.Tensor)), None)
            if isinstance(x, torch.Tensor):
                self.stream[id(x)] = name
                self.keep.append(x)
        return hook

    def _residual_add(self, tensors, out) -> bool:
        for stream, branch in (tensors, tensors[::-1]):
            block = self.stream.get(id(stream))
            if block is None or not isinstance(out, torch.Tensor):
                continue
            tag = self.tags.get(id(branch))
            if tag is None:
                self.untagged[block] += 1
            elif tag not in self.ends[block]:
                self.ends[block].append(tag)
            self.stream[id(out)] = block
            self.keep.append(out)
            return True
        return False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        fname = getattr(func, "__name__", "")
        tensors = [a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor)]
        if fname in _ADDS and len(tensors) == 2 and self._residual_add(tensors, out):
            return out
        tagged = [self.tags[id(t)] for t in tensors if id(t) in self.tags]
        if len(set(tagged)) == 1 and isinstance(out, torch.Tensor):
            self._tag(out, tagged[0], force=True)
        return out


_ADDS = ("add", "__add__", "__radd__", "__iadd__", "add_")


def branch_ends(model: nn.Module, depth: Depth, example) -> dict[int, list[str]]:
    """Block index -> the modules whose outputs its residual additions take, traced on one
    forward of ``model`` (a model whose block lists have ``depth.base_depth`` blocks: the base).

    A ValueError names a block where nothing is added to the stream, or where an added tensor
    comes from no module (the branch cannot be scaled by a hook).
    """
    from mutransfer.core._usage import TraceError, call_with

    modules = dict(model.named_modules())
    blocks = {f"{c}{'.' if c else ''}{i}": modules[f"{c}{'.' if c else ''}{i}"]
              for c in depth.containers for i in range(len(modules[c]))}
    tracer = _BranchTracer(model, blocks)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), tracer:
            call_with(model, example)
    except Exception as err:  # the user's forward: say which input failed
        raise TraceError(f"{type(err).__name__}: {err}") from err
    finally:
        tracer.close()
        model.train(was_training)
    out = {}
    for name, ends in tracer.ends.items():
        inside = [e for e in ends if e == name or e.startswith(f"{name}.")]
        problem = ("no tensor is added to its residual stream" if not ends else
                   "a tensor added to its residual stream comes from no module inside it"
                   if tracer.untagged[name] or len(inside) < len(ends) else None)
        if problem:
            raise ValueError(
                f"block {name!r}: {problem}, so its residual branch cannot be scaled for depth. "
                f"Depth transfer needs pre-norm residual blocks h + F(h) whose F ends in a module; "
                f"parametrize with depth_alpha=0 (no branch multiplier) or a base of the model's "
                f"own depth")
        out[depth.block_of(name)] = inside
    return out

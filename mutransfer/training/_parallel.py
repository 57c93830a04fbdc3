"""Many-process training: the process group, wrapping a model in DDP or FSDP2 (and compiling
it), and each rank's slice of a global batch.

Data parallelism here keeps one process's numbers: every rank draws the *same* global batch of
``batch_size`` examples from the same seeded generator and keeps its own contiguous slice of
``batch_size / world_size`` rows (:func:`local_batch`). Gradients are averaged over ranks (DDP's
all-reduce, FSDP2's reduce-scatter), losses are averaged over ranks (:func:`mean_over_ranks`),
so with equal slices the step equals one process's on the whole batch up to float summation
order. The data position is therefore one generator for all ranks, whatever their number.

Launch with ``torchrun --nproc_per_node=N -m mutransfer train CONFIG`` and ``[train] parallel =
"ddp"`` (every rank holds the whole model) or ``"fsdp"`` (``fully_shard``: each block of the
model's outermost ``nn.ModuleList``\\ s, then the root; parameters become ``Shard(0)`` DTensors).

    >>> device = init_parallel("fsdp")                       # under torchrun
    >>> model = wrap_model(plan.model.to(device), "fsdp")
    >>> opt = plan.optimizer(lr, model=model)                # after wrapping: the sharded parameters
"""
from __future__ import annotations

import contextlib
import os

import torch
from torch import nn

from mutransfer.core import check_choice

PARALLEL = ("none", "ddp", "fsdp")
LAUNCH = "torchrun --nproc_per_node=N -m mutransfer train CONFIG"


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; anything else as ``torch.device``.

        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def rank_and_world() -> tuple[int, int]:
    """(this process's rank, the number of ranks): (0, 1) without a process group.

        >>> rank_and_world()
        (0, 1)
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """True on rank 0 (and without a process group): the one rank that writes reports.

        >>> is_main_process()
        True
    """
    return rank_and_world()[0] == 0


def init_parallel(parallel: str, device: str | torch.device = "auto") -> torch.device:
    """Check ``parallel`` and return this rank's device; for ``"ddp"``/``"fsdp"`` start the
    process group from torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, ...) unless one
    is already initialised. Backend: NCCL for CUDA (and gloo for CPU tensors), else gloo.
    ``device="auto"``: ``cuda:LOCAL_RANK`` when CUDA is present, else cpu.

        >>> init_parallel("none", "cpu")
        device(type='cpu')
    """
    import torch.distributed as dist

    check_choice("parallel", parallel, PARALLEL)
    dev = resolve_device(device)
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if parallel == "none":
        if launched > 1 or rank_and_world()[1] > 1:
            raise ValueError(f"{max(launched, rank_and_world()[1])} processes were launched but "
                             f"parallel='none' would train the whole model on each of them; set "
                             f"[train] parallel = \"ddp\" or \"fsdp\", or run one process")
        return dev
    if not dist.is_initialized():
        if "RANK" not in os.environ or "MASTER_ADDR" not in os.environ:
            raise ValueError(f"parallel={parallel!r} needs one process per device and a process "
                             f"group: launch with `{LAUNCH}`, or call "
                             f"torch.distributed.init_process_group() first (or use parallel='none')")
        cuda = dev.type == "cuda"
        dist.init_process_group("cuda:nccl,cpu:gloo" if cuda else "gloo")
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else int(os.environ.get("LOCAL_RANK", "0"))
        dev = torch.device("cuda", index)
        torch.cuda.set_device(dev)
    return dev


def unwrap_compiled(model: nn.Module) -> nn.Module:
    """The module inside ``torch.compile``'s wrapper (the model itself when not compiled)."""
    return getattr(model, "_orig_mod", model)


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The modules :func:`wrap_model` shards on their own before the root: the children of
    each outermost ``nn.ModuleList`` (a transformer's blocks; MoE expert lists inside a block
    stay in the block's unit)."""
    lists = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList)]
    outer = [m for name, m in lists
             if not any(name.startswith(f"{other}.") for other, _ in lists if other != name)]
    return [child for m in outer for child in m]


def wrap_model(model: nn.Module, parallel: str, *, compile: bool = False) -> nn.Module:
    """``model`` for ``parallel``: as is (``"none"``), in ``DistributedDataParallel``
    (``"ddp"``), or sharded in place by FSDP2's ``fully_shard`` (``"fsdp"``: each of
    :func:`shard_units`, then the root); then ``torch.compile``\\ d when ``compile``. Move the
    model to its device first, and build the optimizer from the returned model afterwards
    (``plan.optimizer(lr, model=wrapped)``: FSDP2 replaces the parameters). DDP keeps torch's
    ``find_unused_parameters=False``: a model whose forward leaves a parameter unused fails on
    its second step with DDP's own message (use "fsdp", or wrap it yourself).

        >>> model = wrap_model(plan.model.to(device), "ddp", compile=True)
    """
    check_choice("parallel", parallel, PARALLEL)
    if not isinstance(compile, bool):
        raise TypeError(f"compile must be True or False; got {compile!r}")
    if parallel != "none" and not _initialized():
        raise ValueError(f"parallel={parallel!r} needs an initialised process group: call "
                         f"init_parallel({parallel!r}) under `{LAUNCH}` first")
    if parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        device = next(model.parameters()).device
        model = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    elif parallel == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for unit in shard_units(model):
            fully_shard(unit)
        fully_shard(model)
    return torch.compile(model) if compile else model


def _initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def check_wrapped(model: nn.Module, parallel: str) -> None:
    """Raise unless ``model`` (compiled or not) is wrapped as ``parallel`` says: in DDP for
    ``"ddp"``, by ``fully_shard`` for ``"fsdp"``, in neither for ``"none"``."""
    from torch.distributed.fsdp import FSDPModule
    from torch.nn.parallel import DistributedDataParallel

    check_choice("parallel", parallel, PARALLEL)
    inner = unwrap_compiled(model)
    kind = ("ddp" if isinstance(inner, DistributedDataParallel) else
            "fsdp" if isinstance(inner, FSDPModule) else "none")
    if kind != parallel:
        wrapped = {"ddp": "in DistributedDataParallel", "fsdp": "by fully_shard",
                   "none": "in neither DDP nor fully_shard"}[kind]
        raise TypeError(f"parallel={parallel!r} but the model is wrapped {wrapped}; wrap it with "
                        f"mutransfer.training.wrap_model(model, {parallel!r}) or pass "
                        f"parallel={kind!r}")
    if parallel != "none" and not _initialized():
        raise ValueError(f"parallel={parallel!r} needs an initialised process group; launch with "
                         f"`{LAUNCH}`")


def local_batch(batch, rank: int | None = None, world_size: int | None = None):
    """This rank's rows of a global batch: rows ``[r * b, (r + 1) * b)`` with
    ``b = batch_size / world_size`` of every tensor in ``batch`` (a tensor or a tuple of them);
    rank and world size default to the process group's.

        >>> x, y = local_batch((torch.arange(8), torch.arange(8)), rank=1, world_size=2)
        >>> x.tolist()
        [4, 5, 6, 7]
    """
    if rank is None or world_size is None:
        rank, world_size = rank_and_world()
    if world_size == 1:
        return batch
    tensors = batch if isinstance(batch, (tuple, list)) else (batch,)
    rows = tensors[0].shape[0]
    if rows % world_size:
        raise ValueError(f"a global batch of {rows} examples does not split into {world_size} "
                         f"equal slices; use a batch size divisible by the number of ranks "
                         f"(e.g. {rows - rows % world_size or world_size})")
    b = rows // world_size
    out = tuple(t[rank * b:(rank + 1) * b] for t in tensors)
    return out if isinstance(batch, (tuple, list)) else out[0]


def mean_over_ranks(values: list[float], device: torch.device) -> list[float]:
    """Each value averaged over the ranks (one all-reduce); unchanged without a process group."""
    if rank_and_world()[1] == 1:
        return list(values)
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / dist.get_world_size()).tolist()


@contextlib.contextmanager
def grad_sync(model: nn.Module, enabled: bool):
    """Let a backward inside skip the gradient all-reduce (DDP ``no_sync``) or reduce-scatter
    (FSDP2 ``set_requires_gradient_sync(False)``) when not ``enabled``: micro-batches before the
    last one accumulate locally, the last one's backward reduces the sum once."""
    from torch.distributed.fsdp import FSDPModule
    from torch.nn.parallel import DistributedDataParallel

    inner = unwrap_compiled(model)
    if enabled or not isinstance(inner, (DistributedDataParallel, FSDPModule)):
        yield
    elif isinstance(inner, DistributedDataParallel):
        with inner.no_sync():
            yield
    else:
        inner.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            inner.set_requires_gradient_sync(True)

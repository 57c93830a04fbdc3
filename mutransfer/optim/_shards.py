"""Row shards of DTensor parameters (FSDP2's ``fully_shard``) and the collectives on them.

FSDP2 holds every parameter as a DTensor placed ``Shard(0)`` over a 1-D device mesh: rank r keeps
rows ``[r c, min((r + 1) c, R))`` of an R-row tensor, ``c = ceil(R / world)`` (torch.chunk's
split, so the last ranks may hold fewer rows or none). Elementwise updates (AdamW, decoupled
decay, the momentum buffer) work on those local rows as they are; what needs the whole matrix
(Newton-Schulz, the power iteration of spectral decay, QK-Clip's max logit) goes through the
counted collectives here, so that ``TRAFFIC`` says exactly what mutransfer.optim sent.

``TRAFFIC.bytes_sent`` counts the payload that leaves this rank for other ranks: all-gather,
its input to each of the ``world - 1`` others; all-to-all, its blocks for the other ranks;
all-reduce, ``2 (world - 1) / world`` of the buffer (a ring all-reduce's cost per rank).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Traffic:
    """Collectives issued by mutransfer.optim on this rank, and the bytes it sent in them.

        >>> TRAFFIC.reset(); opt.step()
        >>> TRAFFIC.calls, TRAFFIC.bytes_sent   # that step's collectives and bytes
    """

    calls: int = 0
    bytes_sent: int = 0

    def reset(self) -> None:
        self.calls = self.bytes_sent = 0

    def add(self, nbytes: float) -> None:
        self.calls += 1
        self.bytes_sent += int(nbytes)


TRAFFIC = Traffic()


def _dtensor_class():
    """DTensor's class, or None while ``torch.distributed.tensor`` is not imported: then no
    DTensor can exist, and importing it just to check (0.5 s) would slow every import."""
    return getattr(sys.modules.get("torch.distributed.tensor"), "DTensor", None)


def is_dtensor(t) -> bool:
    """Whether ``t`` is a DTensor (a parameter sharded by FSDP2 or placed by hand).

        >>> is_dtensor(torch.zeros(2))
        False
    """
    cls = _dtensor_class()
    return cls is not None and isinstance(t, cls)


def local(t: Tensor) -> Tensor:
    """This rank's part of a DTensor (the same storage: in-place ops update the DTensor), or
    ``t`` itself for a plain tensor.

        >>> local(torch.zeros(2)).shape
        torch.Size([2])
    """
    if not is_dtensor(t):
        return t
    with torch.no_grad():  # under grad mode to_local() returns a differentiable copy-view
        return t.to_local()


def check_row_sharded(t: Tensor, name: str, alternative: str = "") -> None:
    """Refuse a DTensor that is not ``Shard(0)`` on a 1-D mesh (FSDP2's placement), naming it
    and the fix (``alternative``: another way out, for the message).

    Row shards are what Muon, spectral decay and QK-Clip know how to reassemble; other placements
    (``Shard(1)``, ``Replicate``, 2-D meshes of HSDP or TP) would be read wrongly.

        >>> check_row_sharded(torch.zeros(2, 2), "w")   # plain tensors pass
    """
    if not is_dtensor(t):
        return
    from torch.distributed.tensor import Shard

    mesh, placements = t.device_mesh, tuple(t.placements)
    if mesh.ndim != 1 or len(placements) != 1 or type(placements[0]) is not Shard \
            or placements[0].dim != 0:
        raise ValueError(
            f"{name} (shape {tuple(t.shape)}) is a DTensor placed {placements} on a "
            f"{mesh.ndim}-D mesh; mutransfer.optim handles only row shards, Shard(0) on a 1-D mesh "
            "(FSDP2's fully_shard(module, mesh=init_device_mesh(device, (world,)))). Shard it "
            f"that way{', or ' + alternative if alternative else ''}")


def shard_rows(rows: int, world: int, rank: int) -> tuple[int, int]:
    """(first row, number of rows) of ``rank``'s shard of ``rows`` rows split torch.chunk's way:
    ``c = ceil(rows / world)``, rank r holds rows ``[r c, min((r + 1) c, rows))``.

        >>> [shard_rows(5, 4, r) for r in range(4)]
        [(0, 2), (2, 2), (4, 1), (5, 0)]
    """
    chunk = -(-rows // world)
    start = min(rank * chunk, rows)
    return start, max(0, min(chunk, rows - start))


def row_range(t: Tensor) -> tuple[int, int]:
    """(first row, number of rows) this rank holds of a ``Shard(0)`` DTensor; (0, rows) for a
    plain tensor. Raises if the local shard is not torch.chunk's split (a DTensor built by
    ``from_local`` with custom sizes), which the collectives here would misread.

        >>> row_range(torch.zeros(3, 2))
        (0, 3)
    """
    if not is_dtensor(t):
        return 0, t.shape[0]
    mesh = t.device_mesh
    start, count = shard_rows(t.shape[0], mesh.size(), mesh.get_local_rank())
    held = local(t).shape[0]
    if held != count:
        raise ValueError(f"a DTensor of shape {tuple(t.shape)} holds {held} rows on rank "
                         f"{mesh.get_local_rank()}, but Shard(0) over {mesh.size()} ranks gives it "
                         f"{count} (torch.chunk's split); build it with distribute_tensor or "
                         "fully_shard instead of DTensor.from_local with uneven shapes")
    return start, count


def mesh_of(t: Tensor):
    """The device mesh of a DTensor (None for a plain tensor).

        >>> mesh_of(torch.zeros(2)) is None
        True
    """
    return t.device_mesh if is_dtensor(t) else None


def _dist():
    import torch.distributed as dist

    return dist


def all_reduce_(x: Tensor, mesh, op: str = "sum") -> Tensor:
    """In-place all-reduce (``op`` "sum" or "max") of ``x`` over ``mesh``'s ranks, counted.

        >>> all_reduce_(partial, w.device_mesh)   # partial becomes the sum over ranks
    """
    dist, world = _dist(), mesh.size()
    TRAFFIC.add(2 * (world - 1) / world * x.numel() * x.element_size())
    reduce_op = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op]
    dist.all_reduce(x, op=reduce_op, group=mesh.get_group())
    return x


def all_gather(x: Tensor, mesh) -> Tensor:
    """Every rank's 1-D ``x`` (all the same size), stacked: ``out[r] = x on rank r``, shape
    ``(world, x.numel())``; counted.

        >>> all_gather(torch.full((3,), float(rank)), mesh)   # on 2 ranks: [[0, 0, 0], [1, 1, 1]]
    """
    dist, world = _dist(), mesh.size()
    out = x.new_empty(world * x.numel())  # flat: gloo refuses a (world, n) output
    TRAFFIC.add((world - 1) * x.numel() * x.element_size())
    # all_gather_single replaces the deprecated all_gather_into_tensor in newer torch
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    gather(out, x, group=mesh.get_group())
    return out.view(world, x.numel())


def all_to_all(x: Tensor, send: list[int], receive: list[int], mesh) -> Tensor:
    """All-to-all of a 1-D ``x``: ``send[r]`` elements (in rank order) go to rank r, and
    ``receive[r]`` come back from rank r, concatenated in rank order; counted.

        >>> all_to_all(x, [2, 1], [2, 2], mesh)   # rank 0 of 2: keeps 2 elements, sends 1
    """
    dist, me = _dist(), mesh.get_local_rank()
    out = x.new_empty(sum(receive))
    TRAFFIC.add((sum(send) - send[me]) * x.element_size())
    dist.all_to_all_single(out, x, output_split_sizes=list(receive), input_split_sizes=list(send),
                           group=mesh.get_group())
    return out

"""msign of row-sharded matrices, for Muon under FSDP2: two designs with the same result.

Each rank holds rows of every update U (``Shard(0)``); Newton-Schulz needs the whole matrix, so
the rows of msign(U) that a rank keeps come from one of

- ``"owner"``: each matrix is given to one rank (largest Newton-Schulz cost first, each to the
  least loaded rank), an all-to-all brings its row shards to that owner, the owner orthogonalizes
  it once and a second all-to-all sends each rank its rows back. Per step: 2 collectives, about
  ``2 (world - 1) / world * F`` bytes sent in all (F: the bytes of every matrix once), and the
  Newton-Schulz work is split between the ranks (about 1/world of one process's each).
- ``"gather"``: one all-gather of every matrix (each rank's rows padded to ``ceil(R / world)``),
  then every rank orthogonalizes every matrix and keeps its rows. Per step: 1 collective,
  ``(world - 1) * F`` bytes sent in all, and every rank does one process's whole Newton-Schulz work.

Updates travel in the smaller of their dtype and the Newton-Schulz dtype: the cast is the first
thing Newton-Schulz does, so casting before sending changes no bit of the result.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from mutransfer.optim._shards import all_gather, all_to_all, shard_rows

DESIGNS = ("owner", "gather")
# (full matrices, ns_steps, ns_dtype) -> msign of each: Muon's batched Newton-Schulz
Orthogonalize = Callable[[list[Tensor], int, torch.dtype], list[Tensor]]


@dataclass(frozen=True, eq=False)
class RowShard:
    """This rank's rows ``(n, cols)`` of one update, the full matrix's row count, its mesh and
    the Newton-Schulz settings of its param group."""

    rows: Tensor
    total_rows: int
    mesh: object
    steps: int
    dtype: torch.dtype


def assign_owners(costs: list[float], world: int) -> list[int]:
    """The owner rank of each matrix: largest cost first, each to the least loaded rank (ties to
    the lower rank), so the ranks' summed Newton-Schulz costs differ by at most one matrix's.
    Deterministic: every rank computes the same owners from the same costs.

        >>> assign_owners([4.0, 3.0, 2.0, 1.0], world=2)
        [0, 1, 1, 0]
    """
    loads, owners = [0.0] * world, [0] * len(costs)
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        owner = min(range(world), key=lambda r: (loads[r], r))
        owners[i] = owner
        loads[owner] += costs[i]
    return owners


def ns_cost(rows: int, cols: int) -> float:
    """Flops of one Newton-Schulz iteration on a (rows, cols) matrix, up to a factor 2:
    with m = min(rows, cols), M = max: ``A = X X^T`` (m^2 M), ``A^2`` (m^3), ``B X`` (m^2 M).

        >>> ns_cost(256, 1024)
        150994944.0
    """
    m, big = min(rows, cols), max(rows, cols)
    return float(m * m * (2 * big + m))


def msign_row_shards(shards: list[RowShard], design: str,
                     orthogonalize: Orthogonalize) -> list[Tensor]:
    """This rank's rows of ``msign(U)`` for each row-sharded update U (module docstring):

        msign(U)[start:start + n]   with U = cat(rows of every rank), (start, n) = this rank's rows

    Every rank must pass the same matrices in the same order (the collectives pair them up).
    ``design`` is "owner" or "gather"; both return the same values.

        >>> mine = msign_row_shards([RowShard(u_local, 128, mesh, 5, torch.float32)], "owner", fn)
    """
    if design not in DESIGNS:
        raise ValueError(f"distributed must be one of {', '.join(map(repr, DESIGNS))} (how Muon "
                         f"orthogonalizes sharded matrices); got {design!r}")
    out: list[Tensor | None] = [None] * len(shards)
    buckets: dict[tuple, list[int]] = {}
    for i, s in enumerate(shards):
        wire = s.dtype if s.dtype.itemsize <= s.rows.dtype.itemsize else s.rows.dtype
        buckets.setdefault((s.mesh, wire, s.dtype), []).append(i)
    run = _by_owner if design == "owner" else _by_gather
    for (mesh, wire, _), idx in buckets.items():
        for i, rows in zip(idx, run([shards[i] for i in idx], mesh, wire, orthogonalize)):
            out[i] = rows
    return out


def _msign_all(fulls: list[Tensor], shards: list[RowShard], orthogonalize: Orthogonalize
               ) -> list[Tensor]:
    """msign of full matrices, batched by their groups' (ns_steps, ns_dtype)."""
    out: list[Tensor | None] = [None] * len(fulls)
    settings: dict[tuple, list[int]] = {}
    for i, s in enumerate(shards):
        settings.setdefault((s.steps, s.dtype), []).append(i)
    for (steps, dtype), idx in settings.items():
        for i, result in zip(idx, orthogonalize([fulls[i] for i in idx], steps, dtype)):
            out[i] = result
    return out


def _by_gather(shards: list[RowShard], mesh, wire: torch.dtype, orthogonalize) -> list[Tensor]:
    world, me = mesh.size(), mesh.get_local_rank()
    cols = [s.rows.shape[1] for s in shards]
    chunks = [-(-s.total_rows // world) for s in shards]
    offsets = [0]
    for c, k in zip(chunks, cols):
        offsets.append(offsets[-1] + c * k)
    # one flat buffer, every matrix's rows padded to `chunk` (all-gather needs equal sizes)
    send = shards[0].rows.new_zeros(offsets[-1], dtype=wire)
    for s, o, k in zip(shards, offsets, cols):
        send[o:o + s.rows.numel()].view(-1, k).copy_(s.rows)
    got = all_gather(send, mesh)  # (world, total): rank r's padded rows of each matrix
    fulls = [got[:, o:o + c * k].reshape(world * c, k)[:s.total_rows]  # padding is at the end
             for s, o, c, k in zip(shards, offsets, chunks, cols)]
    results = _msign_all(fulls, shards, orthogonalize)
    mine = []
    for s, r in zip(shards, results):
        start, n = shard_rows(s.total_rows, world, me)
        mine.append(r[start:start + n])
    return mine


def _by_owner(shards: list[RowShard], mesh, wire: torch.dtype, orthogonalize) -> list[Tensor]:
    world, me = mesh.size(), mesh.get_local_rank()
    cols = [s.rows.shape[1] for s in shards]
    held = [[shard_rows(s.total_rows, world, r)[1] for r in range(world)] for s in shards]
    owners = assign_owners([ns_cost(s.total_rows, k) for s, k in zip(shards, cols)], world)
    owned = [i for i, o in enumerate(owners) if o == me]
    by_owner = [[i for i, o in enumerate(owners) if o == r] for r in range(world)]

    # there: my rows of every matrix to its owner (blocks in rank order, matrices in index order)
    send = _cat([shards[i].rows.reshape(-1).to(wire) for r in range(world) for i in by_owner[r]],
                shards[0].rows, wire)
    to_owner = [sum(held[i][me] * cols[i] for i in by_owner[r]) for r in range(world)]
    from_rank = [sum(held[i][r] * cols[i] for i in owned) for r in range(world)]
    got = all_to_all(send, to_owner, from_rank, mesh)
    pieces: dict[int, list[Tensor]] = {i: [] for i in owned}
    offset = 0
    for r in range(world):
        for i in owned:
            size = held[i][r] * cols[i]
            pieces[i].append(got[offset:offset + size].view(held[i][r], cols[i]))
            offset += size
    results = _msign_all([torch.cat(pieces[i]) for i in owned], [shards[i] for i in owned],
                         orthogonalize)

    # and back: each rank's rows of the matrices this rank owns
    back = []
    for r in range(world):
        for i, result in zip(owned, results):
            start, n = shard_rows(shards[i].total_rows, world, r)
            back.append(result[start:start + n].reshape(-1))
    returned = all_to_all(_cat(back, shards[0].rows, shards[0].dtype), from_rank, to_owner, mesh)
    mine: list[Tensor | None] = [None] * len(shards)
    offset = 0
    for r in range(world):
        for i in by_owner[r]:
            size = held[i][me] * cols[i]
            mine[i] = returned[offset:offset + size].view(held[i][me], cols[i])
            offset += size
    return mine


def _cat(flat: list[Tensor], like: Tensor, dtype: torch.dtype) -> Tensor:
    return torch.cat(flat) if flat else like.new_empty(0, dtype=dtype)

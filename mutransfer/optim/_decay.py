"""Spectral weight decay (scaling.md section 4): decay only the top singular direction,

    W -= lr * wd * W v1 v1^T  =  lr * wd * sigma1 u1 v1^T      (the gradient of ||W||_2^2 / 2)

with v1 from power iteration on ``W^T W`` warm-started from the previous step's vector, kept in
the optimizer state as ``spectral_v``. :class:`~mutransfer.optim.Muon` applies it itself;
:class:`SpectralDecayHook` applies it to torch's own optimizers.

On a row-sharded DTensor (FSDP2, ``Shard(0)``) with row blocks W_r on the ranks,
``W^T (W v) = sum_r W_r^T (W_r v)``: each power iteration all-reduces that sum (one all-reduce for
all matrices of a call), v is the same full vector on every rank, and the decay
``W_r -= lr * wd * (W_r v1) v1^T`` touches only local rows.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from mutransfer.optim import _shards

DECAY_KINDS = ("decoupled", "spectral")
# Power iterations on W^T W per step: from a random start the error shrinks like
# (sigma2 / sigma1)^(2 n); warm-started from last step's v1 (which moves by O(lr) a step) two
# iterations keep it converged.
SPECTRAL_COLD_ITERS = 10
SPECTRAL_WARM_ITERS = 2
SPECTRAL_SEED = 0  # the cold start is a seeded Gaussian, so runs stay deterministic


def _matrix(t: Tensor, view: bool = True) -> Tensor:
    """The local rows of ``t`` as (rows, cols) (a conv weight as (out, in*k*k)): a view, to
    decay in place, or a reshape, to read. Explicit sizes: an empty shard cannot infer a -1."""
    t = _shards.local(t)
    shape = (t.shape[0], math.prod(t.shape[1:]))
    return t.view(shape) if view else t.reshape(shape)


def _start(M: Tensor, v: Tensor | None, iters: int | None) -> tuple[Tensor, int]:
    """The power iteration's start: last step's v (warm) or a seeded Gaussian (cold)."""
    if v is None:
        gen = torch.Generator().manual_seed(SPECTRAL_SEED)
        v = torch.randn(M.shape[1], generator=gen, dtype=torch.float32).to(M)
        iters = SPECTRAL_COLD_ITERS if iters is None else iters
    return v, SPECTRAL_WARM_ITERS if iters is None else iters


def _power_iterations(mats: list[Tensor], vs: list[Tensor], iters: int, mesh) -> list[Tensor]:
    """``iters`` steps of v <- W^T (W v) / ||.|| for each (local rows of) W; with a mesh, the
    partial products of all matrices are summed over its ranks in one all-reduce per step."""
    for _ in range(iters):
        ws = [M.mT @ (M @ v) for M, v in zip(mats, vs)]
        if mesh is not None:
            total = _shards.all_reduce_(torch.cat(ws), mesh)
            ws = list(total.split([w.numel() for w in ws]))
        vs = [torch.where(norm > 0, w / norm.clamp_min(torch.finfo(w.dtype).tiny), v)
              for w, v, norm in ((w, v, torch.linalg.vector_norm(w)) for w, v in zip(ws, vs))]
    return vs


def top_singular_vector(W: Tensor, v: Tensor | None = None, iters: int | None = None) -> Tensor:
    """v1 of ``W`` (its top right singular vector, unit norm) by power iteration on ``W^T W``:

        v <- W^T (W v) / ||W^T (W v)||      (``iters`` times; a zero result keeps the old v)

    ``v=None`` starts from a seeded Gaussian with ``SPECTRAL_COLD_ITERS`` iterations; a given
    ``v`` (last step's) warm-starts ``SPECTRAL_WARM_ITERS``. A conv weight is read as
    ``(out, in*k*k)``. For a row-sharded DTensor, ``W^T (W v) = sum_r W_r^T (W_r v)`` is
    all-reduced over its mesh, and every rank gets the same full v1.

        >>> v = top_singular_vector(torch.diag(torch.tensor([3.0, 1.0])))
        >>> torch.allclose(v.abs(), torch.tensor([1.0, 0.0]), atol=1e-4)
        True
    """
    _shards.check_row_sharded(W, "the matrix of top_singular_vector")
    M = _matrix(W, view=False)
    v, iters = _start(M, v, iters)
    return _power_iterations([M], [v], iters, _shards.mesh_of(W))[0]


def spectral_decay_(params: list[Tensor], states: list[dict], lr_wd: float, expert_dims: int = 0) -> None:
    """Spectral weight decay in place: ``W -= lr_wd * (W v1) v1^T`` for each matrix, which
    lowers sigma1 to ``sigma1 (1 - lr_wd)`` and leaves the other singular values alone.

    v1 comes from :func:`top_singular_vector`, warm-started from and stored back into each
    parameter's ``state["spectral_v"]`` (so it survives ``state_dict`` round trips). Row-sharded
    DTensors (FSDP2) are exact too (module docstring): their power iterations share one
    all-reduce per iteration, so every rank must pass the same matrices in the same order.
    With ``expert_dims`` k, each parameter is a stack of expert matrices (its first k dims), as
    Muon orthogonalizes them: each expert's own sigma1 is decayed (:func:`expert_spectral_decay_`).

        >>> w = torch.diag(torch.tensor([3.0, 1.0])); spectral_decay_([w], [{}], 0.1)
        >>> w.diagonal()   # tensor([2.7000, 1.0000])
    """
    if lr_wd == 0:
        return
    if expert_dims:
        for p, state in zip(params, states):
            expert_spectral_decay_(p, state, lr_wd, expert_dims)
        return
    mats, starts, batches = [], [], {}
    for i, (p, state) in enumerate(zip(params, states)):
        _shards.check_row_sharded(p, f"parameter {i} of spectral_decay_", "use decoupled decay")
        mats.append(_matrix(p))
        starts.append(_start(mats[-1], state.get("spectral_v"), None))
        key = (_shards.mesh_of(p), starts[-1][1], mats[-1].dtype)  # one all-reduce per batch
        batches.setdefault(key, []).append(i)
    for (mesh, iters, _), idx in batches.items():
        vs = _power_iterations([mats[i] for i in idx], [starts[i][0] for i in idx], iters, mesh)
        for i, v in zip(idx, vs):
            states[i]["spectral_v"] = v
            mats[i].addr_(mats[i] @ v, v, alpha=-lr_wd)


def expert_spectral_decay_(param: Tensor, state: dict, lr_wd: float, expert_dims: int) -> None:
    """Spectral decay of each expert matrix of a fused stack (E..., out, in...):
    ``W_e -= lr_wd * (W_e v_e) v_e^T`` with v_e the top right singular vector of expert e, by a
    batched power iteration warm-started from ``state["spectral_v"]`` (shape (E, in)). Under
    FSDP2's ``Shard(0)`` each rank holds whole experts, so no collective is needed.

        >>> w = torch.stack([torch.diag(torch.tensor([3.0, 1.0])), torch.diag(torch.tensor([1.0, 5.0]))])
        >>> expert_spectral_decay_(w, {}, 0.1, expert_dims=1)   # 3 -> 2.7 and 5 -> 4.5
    """
    if not isinstance(expert_dims, int) or isinstance(expert_dims, bool) or not 0 < expert_dims <= param.ndim - 2:
        raise ValueError(f"expert_dims must be an int in [1, ndim - 2] for a parameter of shape "
                         f"{tuple(param.shape)}; got {expert_dims!r}")
    local = _shards.local(param)
    shape = local.shape
    experts, rows = math.prod(shape[:expert_dims]), shape[expert_dims]
    M = local.view(experts, rows, math.prod(shape[expert_dims + 1:]))
    v, iters = state.get("spectral_v"), SPECTRAL_WARM_ITERS
    if v is None or v.shape != (experts, M.shape[2]):
        gen = torch.Generator().manual_seed(SPECTRAL_SEED)
        v, iters = torch.randn(experts, M.shape[2], generator=gen, dtype=torch.float32).to(M), SPECTRAL_COLD_ITERS
    for _ in range(iters):
        w = (M.mT @ (M @ v.unsqueeze(-1))).squeeze(-1)
        norm = torch.linalg.vector_norm(w, dim=-1, keepdim=True)
        v = torch.where(norm > 0, w / norm.clamp_min(torch.finfo(w.dtype).tiny), v)
    state["spectral_v"] = v
    M.sub_((M @ v.unsqueeze(-1)) @ v.unsqueeze(-2), alpha=lr_wd)


class SpectralDecayHook:
    """Step pre-hook of a torch optimizer: ``W -= lr * spectral_weight_decay * W v1 v1^T`` for
    each parameter with a gradient in the groups that have ``spectral_weight_decay``.

    v1 is warm-started from ``optimizer.state[p]["spectral_v"]``, stored there once the optimizer
    has created that parameter's state (AdamW creates its state lazily when it is empty; until then
    the hook starts cold).

        >>> opt.register_step_pre_hook(SpectralDecayHook())
    """

    def __call__(self, optimizer: torch.optim.Optimizer, args, kwargs) -> None:
        with torch.no_grad():
            for group in optimizer.param_groups:
                wd = group.get("spectral_weight_decay", 0.0)
                params = [p for p in group["params"] if p.grad is not None and p.ndim >= 2]
                if wd and params:
                    states = [optimizer.state[p] if optimizer.state.get(p) else {} for p in params]
                    spectral_decay_(params, states, group["lr"] * wd, group.get("expert_dims", 0))

"""Spectral weight decay (scaling.md section 4): decay only the top singular direction,

    W -= lr * wd * W v1 v1^T  =  lr * wd * sigma1 u1 v1^T      (the gradient of ||W||_2^2 / 2)

with v1 from power iteration on ``W^T W`` warm-started from the previous step's vector, kept in
the optimizer state as ``spectral_v``. :class:`~mutransfer.optim.Muon` applies it itself;
:class:`SpectralDecayHook` applies it to torch's own optimizers.
"""
from __future__ import annotations

import torch
from torch import Tensor

DECAY_KINDS = ("decoupled", "spectral")
# Power iterations on W^T W per step: from a random start the error shrinks like
# (sigma2 / sigma1)^(2 n); warm-started from last step's v1 (which moves by O(lr) a step) two
# iterations keep it converged.
SPECTRAL_COLD_ITERS = 10
SPECTRAL_WARM_ITERS = 2
SPECTRAL_SEED = 0  # the cold start is a seeded Gaussian, so runs stay deterministic


def top_singular_vector(W: Tensor, v: Tensor | None = None, iters: int | None = None) -> Tensor:
    """v1 of ``W`` (its top right singular vector, unit norm) by power iteration on ``W^T W``:

        v <- W^T (W v) / ||W^T (W v)||      (``iters`` times; a zero result keeps the old v)

    ``v=None`` starts from a seeded Gaussian with ``SPECTRAL_COLD_ITERS`` iterations; a given
    ``v`` (last step's) warm-starts ``SPECTRAL_WARM_ITERS``. A conv weight is read as
    ``(out, in*k*k)``.

        >>> v = top_singular_vector(torch.diag(torch.tensor([3.0, 1.0])))
        >>> torch.allclose(v.abs(), torch.tensor([1.0, 0.0]), atol=1e-4)
        True
    """
    M = W.reshape(W.shape[0], -1)
    if v is None:
        gen = torch.Generator().manual_seed(SPECTRAL_SEED)
        v = torch.randn(M.shape[1], generator=gen, dtype=torch.float32).to(M)
        iters = SPECTRAL_COLD_ITERS if iters is None else iters
    iters = SPECTRAL_WARM_ITERS if iters is None else iters
    for _ in range(iters):
        w = M.mT @ (M @ v)
        norm = torch.linalg.vector_norm(w)
        v = torch.where(norm > 0, w / norm.clamp_min(torch.finfo(w.dtype).tiny), v)
    return v


def spectral_decay_(params: list[Tensor], states: list[dict], lr_wd: float) -> None:
    """Spectral weight decay in place: ``W -= lr_wd * (W v1) v1^T`` for each matrix, which
    lowers sigma1 to ``sigma1 (1 - lr_wd)`` and leaves the other singular values alone.

    v1 comes from :func:`top_singular_vector`, warm-started from and stored back into each
    parameter's ``state["spectral_v"]`` (so it survives ``state_dict`` round trips).

        >>> w = torch.diag(torch.tensor([3.0, 1.0])); spectral_decay_([w], [{}], 0.1)
        >>> w.diagonal()   # tensor([2.7000, 1.0000])
    """
    if lr_wd == 0:
        return
    for p, state in zip(params, states):
        v = top_singular_vector(p, state.get("spectral_v"))
        state["spectral_v"] = v
        M = p.view(p.shape[0], -1)
        M.addr_(M @ v, v, alpha=-lr_wd)


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
                    spectral_decay_(params, states, group["lr"] * wd)

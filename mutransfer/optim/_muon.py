"""Muon: momentum orthogonalized by Newton-Schulz, in torch optimizer conventions (scaling.md s4).

For a matrix parameter W with gradient G (momentum beta, Nesterov):

    M = beta M + (1 - beta) G;   U = msign((1 - beta) G + beta M)   (or msign(M) without Nesterov)
    W = W - lr * wd * W - lr * alpha * U

The momentum buffer is the exponential moving average that ``torch.optim.Muon`` keeps; msign is
scale invariant, so this is the same update as the sum form
``M = beta M + G; U = msign(G + beta M)``.
No width rule lives here: the caller's Plan supplies ``alpha`` per param group (e.g. the spectral
rule ``sqrt(fan_out / fan_in)``). Groups with ``use_muon=False`` (embeddings, the readout, vectors)
are updated by torch's own functional AdamW.

Decay kinds (group key ``decay``): ``"decoupled"`` shrinks W by ``lr * wd * W``; ``"spectral"``
decays only the top singular direction, ``W -= lr * wd * W v1 v1^T = lr * wd * sigma1 u1 v1^T``
(the gradient of ``||W||_2^2 / 2``), with v1 from power iteration on ``W^T W`` warm-started from
the previous step's vector (kept in the optimizer state as ``spectral_v``). Vectors always get
decoupled decay.
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.optim.adamw import adamw

from mutransfer.optim import _shards
from mutransfer.optim._decay import DECAY_KINDS, spectral_decay_
from mutransfer.optim._sharded_msign import DESIGNS, RowShard, msign_row_shards

__all__ = ["Muon", "newton_schulz", "default_ns_dtype"]

# Keller Jordan's quintic coefficients (the same as torch.optim.Muon's).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_EPS = 1e-7
# On a CPU, stacking same-shaped matrices into one batched product saves per-op overhead for
# small matrices but is slower than a loop of matrix products for large ones. Measured (bf16,
# one AVX512-BF16 core, a Muon step over 8 square matrices), batched / loop: 0.25 at 64x64,
# 0.50 at 128, 0.83 at 192, 1.00 at 256, 1.10 at 384 and 512. On CUDA the batch always wins,
# because small products there are bound by kernel launches.
_CPU_BATCH_MAX_NUMEL = 192 * 192


def _cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AVX512-BF16 or AMX)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def default_ns_dtype(device: torch.device | str) -> torch.dtype:
    """The dtype Newton-Schulz runs in when ``ns_dtype=None``: the fastest accurate-enough one.

    bf16 on CUDA and on CPUs with native bf16 matrix products (there it is ~3.5x faster than
    float32); float32 on other devices, where bf16 products are emulated and slow.

        >>> default_ns_dtype("cuda")
        torch.bfloat16
    """
    kind = torch.device(device).type
    if kind == "cuda" or (kind == "cpu" and _cpu_has_native_bf16()):
        return torch.bfloat16
    return torch.float32


def _check_ns_args(steps: int, coefficients: Sequence[float], dtype: torch.dtype | None) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"ns_steps must be an integer >= 1 (5 is standard); got {steps!r}")
    if len(coefficients) != 3:
        raise ValueError(f"coefficients must be three numbers (a, b, c), e.g. {NS_COEFFICIENTS}; "
                         f"got {coefficients!r}")
    if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
        raise TypeError(f"ns_dtype must be None (auto) or a floating torch.dtype such as "
                        f"torch.bfloat16; got {dtype!r}")


def _msign(X: Tensor, steps: int, coefficients: Sequence[float], eps: float) -> Tensor:
    """Quintic Newton-Schulz on a matrix (m, n) or a batch of matrices (k, m, n), in X's dtype.
    X must be a private copy: it is normalized in place."""
    a, b, c = coefficients
    tall = X.size(-2) > X.size(-1)
    if tall:  # iterate on the side with fewer rows: the Gram matrix A is then the small one
        X = X.mT
    norm = torch.linalg.vector_norm(X, dim=(-2, -1), keepdim=X.ndim > 2)
    X.div_(norm + eps)
    mm, addmm = (torch.matmul, torch.addmm) if X.ndim == 2 else (torch.bmm, torch.baddbmm)
    for _ in range(steps):
        A = mm(X, X.mT)
        B = addmm(A, A, A, beta=b, alpha=c)  # b A + c A^2
        X = addmm(X, B, X, beta=a)  # a X + B X
    return X.mT if tall else X


def newton_schulz(
    G: Tensor,
    steps: int = 5,
    coefficients: Sequence[float] = NS_COEFFICIENTS,
    eps: float = NS_EPS,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """msign(G) ~ U V^T (G = U S V^T) by the quintic Newton-Schulz iteration (scaling.md s4).

    X0 = G / (||G||_F + eps), transposed so rows <= cols; then ``steps`` times
    X <- a X + (b A + c A^2) X with A = X X^T and (a, b, c) = (3.4445, -4.7750, 2.0315).
    The singular values of the result land in roughly [0.5, 1.5] (by design, not a bug).
    A conv weight (out, in, *k) is reshaped to (out, in*prod(k)) and the result reshaped back.

    Args:
        G: a matrix, or a tensor with ndim > 2 whose first dim is the output dim.
        steps: number of iterations (>= 1).
        coefficients: (a, b, c) of the quintic.
        eps: added to the Frobenius norm so a zero matrix maps to zero.
        dtype: the dtype the iteration runs in and returns; None picks ``default_ns_dtype``
            (bf16 on CUDA and on CPUs with native bf16, else float32). Pass torch.bfloat16 to
            match torch.optim.Muon bit for bit.

        >>> U = newton_schulz(torch.randn(64, 16), dtype=torch.float32)
        >>> bool(torch.linalg.matrix_norm(U, ord=2) < 1.5)
        True
    """
    if not isinstance(G, Tensor) or G.ndim < 2:
        shape = tuple(G.shape) if isinstance(G, Tensor) else type(G).__name__
        raise ValueError(f"newton_schulz needs a matrix (ndim >= 2); got {shape}. "
                         "Vectors have no msign: update them with AdamW instead")
    _check_ns_args(steps, coefficients, dtype)
    dtype = default_ns_dtype(G.device) if dtype is None else dtype
    X = G.reshape(G.shape[0], -1).to(dtype, copy=True)
    return _msign(X, steps, coefficients, eps).reshape(G.shape)


def _batches(params: list[Tensor]) -> list[list[int]]:
    """Indices of ``params`` to update together: same (flattened) shapes, where batching pays."""
    by_shape: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, p in enumerate(params):
        by_shape[(p.shape[0], p.numel() // max(p.shape[0], 1))].append(i)
    batches = []
    for (rows, cols), idx in by_shape.items():
        if params[idx[0]].is_cuda or rows * cols <= _CPU_BATCH_MAX_NUMEL:
            batches.append(idx)
        else:
            batches.extend([i] for i in idx)
    return batches


def _orthogonalize(updates: list[Tensor], steps: int, dtype: torch.dtype,
                   expert_dims: int = 0) -> list[Tensor]:
    """newton_schulz of same-shaped updates (conv weights flattened), stacked when more than one;
    with ``expert_dims`` k, each update is a stack of matrices (its first k dims) done one by one."""
    if expert_dims:
        return [_msign(u.reshape(-1, *u.shape[expert_dims:]).to(dtype, copy=True), steps,
                       NS_COEFFICIENTS, NS_EPS).view(u.shape) for u in updates]
    mats = [u.reshape(u.shape[0], -1) for u in updates]
    if len(mats) == 1:
        results = [_msign(mats[0].to(dtype, copy=True), steps, NS_COEFFICIENTS, NS_EPS)]
    else:
        results = _msign(torch.stack(mats).to(dtype), steps, NS_COEFFICIENTS, NS_EPS).unbind(0)
    return [r.view(u.shape) for r, u in zip(results, updates)]


def _orthogonalize_batched(mats: list[Tensor], steps: int, dtype: torch.dtype) -> list[Tensor]:
    """newton_schulz of full matrices of any shapes, batched the way a single process batches."""
    out: list[Tensor | None] = [None] * len(mats)
    for idx in _batches(mats):
        for i, result in zip(idx, _orthogonalize([mats[i] for i in idx], steps, dtype)):
            out[i] = result
    return out


def _check_range(name: str, value, low: float, high: float, hint: str, high_open: bool = False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and low <= value and (value < high if high_open else value <= high)
    if not ok:
        bound = f"[{low}, {high})" if high_open else f"[{low}, {high}]"
        raise ValueError(f"{name} must be a finite number in {bound} ({hint}); got {value!r}")


def _param_name(group: dict, i: int) -> str:
    names = group.get("names")  # a Plan's groups carry them
    return repr(names[i]) if names and i < len(names) else f"parameter {i} of its group"


def _check_group(group: dict) -> None:
    """Validate one param group's hyperparameters and, for Muon groups, its parameter shapes and
    (for DTensors) placements."""
    inf = math.inf
    _check_range("lr", group["lr"], 0.0, inf, "e.g. 0.02 for Muon, 3e-4 for AdamW")
    _check_range("weight_decay", group["weight_decay"], 0.0, inf, "0 turns it off")
    if group["decay"] not in DECAY_KINDS:
        raise ValueError(f"decay must be one of {', '.join(DECAY_KINDS)}; got {group['decay']!r}")
    if group["use_muon"]:
        _check_range("momentum", group["momentum"], 0.0, 1.0, "0.95 is standard", high_open=True)
        _check_range("alpha", group["alpha"], 0.0, inf,
                     "the Plan's update scale; 1.0 is plain Muon")
        _check_ns_args(group["ns_steps"], NS_COEFFICIENTS, group["ns_dtype"])
        experts = group.get("expert_dims", 0)
        if isinstance(experts, bool) or not isinstance(experts, int) or experts < 0:
            raise ValueError(f"expert_dims must be an integer >= 0 (the leading dims of a fused "
                             f"expert tensor, 0 for plain matrices); got {experts!r}")
        for i, p in enumerate(group["params"]):
            _shards.check_row_sharded(p, _param_name(group, i), "put it in an AdamW group "
                                      "({'params': [...], 'use_muon': False})")
            if experts and p.ndim - experts != 2:
                raise ValueError(
                    f"a group with expert_dims={experts} holds a parameter of shape "
                    f"{tuple(p.shape)}; each expert slice must be a matrix (ndim = expert_dims + 2)")
            if p.ndim < 2:
                raise ValueError(
                    f"Muon only updates matrices, but a use_muon=True group holds a parameter of "
                    f"shape {tuple(p.shape)}; put it in an AdamW group: "
                    "{'params': [...], 'use_muon': False}")
        return
    betas = group["betas"]
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2) such as (0.9, 0.95); got {betas!r}")
    for i, beta in enumerate(betas):
        _check_range(f"betas[{i}]", beta, 0.0, 1.0, "e.g. (0.9, 0.95)", high_open=True)
    _check_range("eps", group["eps"], 0.0, inf, "1e-8 is standard")
    if group["decay"] == "spectral":  # its power iteration reads matrices as row shards
        for i, p in enumerate(group["params"]):
            if p.ndim >= 2:
                _shards.check_row_sharded(p, _param_name(group, i), "use decay='decoupled'")


def _check_grad(p: Tensor) -> None:
    if torch.is_complex(p):
        raise ValueError(f"Muon does not support complex parameters (shape {tuple(p.shape)}); "
                         "optimize the real and imaginary parts as separate real tensors")
    if p.grad.is_sparse:
        raise ValueError(f"Muon does not support sparse gradients (shape {tuple(p.shape)}); "
                         "use a dense embedding or torch.optim.SparseAdam for that parameter")
    if _shards.is_dtensor(p):  # the step reads the local rows of both as the same rows
        grad = tuple(getattr(p.grad, "placements", ("a plain tensor",)))
        if grad != tuple(p.placements):
            raise ValueError(f"a DTensor parameter of shape {tuple(p.shape)} placed "
                             f"{tuple(p.placements)} has a gradient placed {grad}; give it a "
                             "gradient with the parameter's placement (FSDP2 does), e.g. "
                             "grad.redistribute(p.device_mesh, p.placements)")


class Muon(torch.optim.Optimizer):
    r"""Muon for matrices, with AdamW for the groups marked ``use_muon=False``.

    Muon groups (per-group keys lr, momentum, nesterov, weight_decay, decay, alpha, ns_steps,
    ns_dtype):

        M = beta M + (1 - beta) G;  U = msign((1 - beta) G + beta M) if nesterov else msign(M)
        W = W - lr * weight_decay * D(W) - lr * alpha * U

    with ``D(W) = W`` for ``decay="decoupled"`` and ``D(W) = W v1 v1^T`` for ``"spectral"``
    (:func:`spectral_decay_`; in AdamW groups too, for matrices only: vectors keep ``D(W) = W``).

    msign is :func:`newton_schulz` (conv weights reshaped to (out, in*k*k)); a group with
    ``expert_dims=k`` holds fused expert tensors (E, out, in) or (E, in, out) and takes msign
    of each expert matrix ``W[e]`` separately (its ``alpha`` is from one expert's fans). With
    ``alpha = sqrt(max(1, fan_out / fan_in))`` and ``ns_dtype=torch.bfloat16`` the update equals
    ``torch.optim.Muon(adjust_lr_fn="original")``'s. AdamW groups (keys lr, betas, eps,
    weight_decay) run ``torch.optim.adamw.adamw`` with decoupled decay ``W -= lr * wd * W``.

    **Sharded parameters (FSDP2).** Under ``fully_shard`` every parameter is a DTensor of row
    shards (``Shard(0)`` on a 1-D mesh; other placements are refused when the group is added).
    The momentum buffers stay sharded like their parameters (``state_dict()`` holds DTensors) and
    every elementwise step (momentum, AdamW, decoupled decay) works on the local rows. msign needs
    the whole matrix, so each rank gets its rows of ``msign(U)`` of the full update U, equal to
    one process's, by ``distributed="owner"`` (default: each matrix orthogonalized once by one
    rank, two all-to-alls) or ``"gather"`` (one all-gather, every rank orthogonalizes every
    matrix); see :mod:`mutransfer.optim._sharded_msign`. Fused expert stacks sharded on their
    expert dim hold whole expert matrices, so they are orthogonalized locally with no traffic.
    Spectral decay's power iteration sums ``W_r^T (W_r v)`` over the ranks (one all-reduce per
    iteration for all matrices of a group). Every rank must step the same parameters.

    Args:
        params: parameters or param-group dicts; a group may override any default below.
        lr: learning rate (>= 0).
        momentum: beta in [0, 1).
        nesterov: use the Nesterov look-ahead.
        weight_decay: weight decay (>= 0).
        decay: "decoupled" (``W -= lr wd W``) or "spectral" (``W -= lr wd W v1 v1^T``).
        alpha: update scale from the caller's width rule (>= 0).
        ns_steps: Newton-Schulz iterations (>= 1).
        ns_dtype: dtype of the iteration; None picks :func:`default_ns_dtype` for the device.
        use_muon: False makes a group AdamW (for embeddings, the readout and vectors).
        betas, eps: AdamW's, for ``use_muon=False`` groups.
        distributed: how DTensor (FSDP2) matrices are orthogonalized: "owner" (default: each
            matrix's Newton-Schulz runs once, on one rank; on 2 and 4 gloo ranks of a CPU its step
            took 0.58x and 0.28x of "gather"'s, ``python -m mutransfer.bench muon-sharded``)
            or "gather".

        >>> w, b = torch.nn.Parameter(torch.randn(8, 4)), torch.nn.Parameter(torch.zeros(8))
        >>> opt = Muon([{"params": [w]}, {"params": [b], "use_muon": False, "lr": 3e-4}], lr=0.02)
    """

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, nesterov: bool = True,
                 weight_decay: float = 0.0, alpha: float = 1.0, ns_steps: int = 5,
                 ns_dtype: torch.dtype | None = None, use_muon: bool = True,
                 betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8,
                 decay: str = "decoupled", distributed: str = "owner") -> None:
        if distributed not in DESIGNS:
            raise ValueError(f"distributed must be one of {', '.join(map(repr, DESIGNS))} (how "
                             f"sharded matrices are orthogonalized); got {distributed!r}")
        self.distributed = distributed
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                        decay=decay, alpha=alpha, ns_steps=ns_steps, ns_dtype=ns_dtype, use_muon=use_muon,
                        betas=betas, eps=eps)
        super().__init__(params, defaults)

    def __setstate__(self, state: dict) -> None:
        """torch's hook for loading: state_dicts saved before ``decay`` existed decay as then."""
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("decay", "decoupled")

    def add_param_group(self, param_group: dict) -> None:
        """Add a group (torch's rules) and validate it, so bad groups added later also raise."""
        super().add_param_group(param_group)
        try:
            _check_group(self.param_groups[-1])
        except (ValueError, TypeError):
            self.param_groups.pop()
            raise

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every group; ``closure`` (optional) re-evaluates and returns the loss.

            >>> opt = Muon([w := torch.nn.Parameter(torch.randn(8, 4))])
            >>> w.square().sum().backward(); opt.step()
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        row_sharded = []  # (group, params, RowShards): orthogonalized together, after the loop
        for group in self.param_groups:
            if group["use_muon"]:
                row_sharded += self._muon_step(group)
            else:
                self._adamw_step(group)
        if row_sharded:
            self._sharded_update(row_sharded)
        return loss

    def _muon_step(self, group: dict) -> list[tuple]:
        """Update the group's plain tensors and whole-expert shards; return its row-sharded
        matrices with their momentum updates, to be orthogonalized with every group's at once."""
        params, grads, bufs = [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            _check_grad(p)
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            params.append(p)
            grads.append(p.grad)
            bufs.append(state["momentum_buffer"])
        if not params:
            return []
        dtype = group["ns_dtype"] or default_ns_dtype(_shards.local(params[0]).device)
        experts = group.get("expert_dims", 0)
        # An expert stack sharded on its expert dim holds whole expert matrices: msign is local.
        whole = [i for i, p in enumerate(params) if experts or not _shards.is_dtensor(p)]
        # One batch at a time, start to finish, so its tensors are still in cache for the update.
        for idx in _batches([_shards.local(params[i]) for i in whole]):
            idx = [whole[j] for j in idx]
            self._muon_update([params[i] for i in idx], [grads[i] for i in idx],
                              [bufs[i] for i in idx], group, dtype)
        whole_set = set(whole)
        rows = [i for i in range(len(params)) if i not in whole_set]
        if not rows:
            return []
        updates = self._momentum([_shards.local(grads[i]) for i in rows],
                                 [_shards.local(bufs[i]) for i in rows], group)
        shards = [RowShard(u.flatten(1), params[i].shape[0], params[i].device_mesh,
                           group["ns_steps"], dtype) for i, u in zip(rows, updates)]
        return [(group, [params[i] for i in rows], shards)]

    @staticmethod
    def _momentum(grads, bufs, group: dict) -> list[Tensor]:
        """Update the momentum buffers in place; return what msign is taken of."""
        # The EMA form, as torch.optim.Muon: equal to the sum form up to a factor msign removes.
        torch._foreach_lerp_(bufs, grads, 1 - group["momentum"])
        return torch._foreach_lerp(grads, bufs, group["momentum"]) if group["nesterov"] else bufs

    def _muon_update(self, params, grads, bufs, group: dict, dtype: torch.dtype) -> None:
        updates = self._momentum([_shards.local(g) for g in grads],
                                 [_shards.local(b) for b in bufs], group)
        updates = _orthogonalize(updates, group["ns_steps"], dtype, group.get("expert_dims", 0))
        self._apply(params, updates, group)

    def _sharded_update(self, row_sharded: list[tuple]) -> None:
        """msign of every row-sharded update of the step in one exchange, then each group's
        decay and update on the local rows."""
        shards = [s for _, _, group_shards in row_sharded for s in group_shards]
        results = iter(msign_row_shards(shards, self.distributed, _orthogonalize_batched))
        for group, params, group_shards in row_sharded:
            updates = [next(results).view(_shards.local(p).shape) for p in params]
            self._apply(params, updates, group)

    def _apply(self, params, updates: list[Tensor], group: dict) -> None:
        """``W -= lr wd D(W) + lr alpha U`` on the (local) tensors of ``params``."""
        lr, wd = group["lr"], group["weight_decay"]
        tensors = [_shards.local(p) for p in params]
        if wd != 0 and group["decay"] == "spectral":
            spectral_decay_(params, [self.state[p] for p in params], lr * wd, group.get("expert_dims", 0))
        elif wd != 0:
            torch._foreach_mul_(tensors, 1 - lr * wd)
        torch._foreach_add_(tensors, updates, alpha=-(lr * group["alpha"]))

    def _adamw_step(self, group: dict) -> None:
        params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            _check_grad(p)
            state = self.state[p]
            if not state:  # the same state as torch.optim.AdamW's (step kept on the CPU)
                state["step"] = torch.tensor(0.0)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            params.append(p)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        if not params:
            return
        lists = (params, grads, exp_avgs, exp_avg_sqs, steps)
        if group["decay"] != "spectral" or group["weight_decay"] == 0:
            self._adamw(group, *lists, weight_decay=group["weight_decay"])
            return
        # spectral: matrices get W -= lr wd W v1 v1^T before their (undecayed) AdamW update
        for matrices in (True, False):
            idx = [i for i, p in enumerate(params) if (p.ndim >= 2) == matrices]
            if not idx:
                continue
            part = [[lst[i] for i in idx] for lst in lists]
            if matrices:
                spectral_decay_(part[0], [self.state[p] for p in part[0]],
                                group["lr"] * group["weight_decay"], group.get("expert_dims", 0))
            self._adamw(group, *part, weight_decay=0.0 if matrices else group["weight_decay"])

    @staticmethod
    def _adamw(group, params, grads, exp_avgs, exp_avg_sqs, steps, weight_decay: float) -> None:
        beta1, beta2 = group["betas"]
        adamw(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, beta1=beta1,
              beta2=beta2, lr=group["lr"], weight_decay=weight_decay, eps=group["eps"],
              maximize=False)

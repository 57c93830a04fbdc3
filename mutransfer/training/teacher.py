"""A teacher-student linear regression whose gradient-noise scales are known exactly.

Inputs ``x ~ N(0, H)`` with ``H = diag(spectrum)``, targets ``y = w*^T x + s eps`` (eps ~ N(0, 1)),
loss ``l = (x^T w - y)^2 / 2``. With ``e = w - w*`` everything of scaling.md section 6 is closed form:

    L(w) = (e^T H e + s^2) / 2                     population loss
    G = H e,   Sigma = G G^T + 2 L(w) H              per-example gradient mean and covariance
                                                   (Gaussian x: E[x x^T A x x^T] = 2 H A H + tr(A H) H)
    B_simple = tr(Sigma) / |G|^2 = 1 + 2 L tr(H) / |G|^2
    B_noise  = tr(H Sigma) / (G^T H G) = 1 + 2 L tr(H^2) / (G^T H G)
    eta*(B)  = eta_max / (1 + B_noise / B),  eta_max = |G|^2 / (G^T H G)   (one SGD step)

so B_simple equals B_noise only when H ~ I. :class:`LinearTeacher` implements the data protocol
of :mod:`mutransfer.data` (``batch`` draws fresh examples, ``loss`` is the batch mean of l), so
:func:`mutransfer.train` can train a ``nn.Linear(dim, 1, bias=False)`` student on it.
Two vectorised trainers run a grid of lrs times repeats on common random batches in seconds:
:func:`simulate` (linear students, SGD with heavy-ball momentum) and :func:`train_students`
(muP two-layer linear students of a given width, Adam, a token budget's worth of steps).

    >>> t = LinearTeacher.make(dim=16, decay=1.0, noise=0.0)
    >>> t.b_noise(np.zeros(16)), t.b_simple(np.zeros(16))
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True, eq=False)
class LinearTeacher:
    """Teacher ``w_star`` over inputs of per-coordinate variance ``spectrum`` (the Hessian's
    eigenvalues), target noise std ``noise``; see the module docstring for the exact formulas.

        >>> t = LinearTeacher.make(dim=8)
        >>> t.population_loss(t.w_star)   # = noise^2 / 2
    """

    spectrum: np.ndarray
    w_star: np.ndarray
    noise: float

    @classmethod
    def make(cls, dim: int = 32, decay: float = 0.0, noise: float = 0.0, seed: int = 0) -> "LinearTeacher":
        """Spectrum ``h_i = i^-decay`` (``decay = 0``: H = I), ``w* ~ N(0, I / tr(H))`` so L(0) ~ 1/2.

            >>> LinearTeacher.make(dim=4, decay=1.0).spectrum
            array([1.  , 0.5 , 0.33..., 0.25])
        """
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, e.g. 32; got {dim!r}")
        if not decay >= 0 or not noise >= 0:
            raise ValueError(f"decay and noise must be >= 0 (e.g. decay=1.0, noise=0.1); got "
                             f"decay={decay!r}, noise={noise!r}")
        h = np.arange(1, dim + 1, dtype=float) ** -float(decay)
        w = np.random.default_rng(seed).normal(size=dim) / np.sqrt(h.sum())
        return cls(h, w, float(noise))

    def population_loss(self, w) -> float:
        """L(w) = (e^T H e + s^2) / 2."""
        e = np.asarray(w, float) - self.w_star
        return float(0.5 * (e @ (self.spectrum * e) + self.noise ** 2))

    def b_simple(self, w) -> float:
        """tr(Sigma) / |G|^2 = 1 + 2 L tr(H) / |G|^2."""
        g = self.spectrum * (np.asarray(w, float) - self.w_star)
        return float(1 + 2 * self.population_loss(w) * self.spectrum.sum() / (g @ g))

    def b_noise(self, w) -> float:
        """tr(H Sigma) / (G^T H G) = 1 + 2 L tr(H^2) / (G^T H G)."""
        g = self.spectrum * (np.asarray(w, float) - self.w_star)
        return float(1 + 2 * self.population_loss(w) * (self.spectrum ** 2).sum() / (g @ (self.spectrum * g)))

    def eta_max(self, w) -> float:
        """|G|^2 / (G^T H G): the best one-step SGD lr at an infinite batch."""
        g = self.spectrum * (np.asarray(w, float) - self.w_star)
        return float((g @ g) / (g @ (self.spectrum * g)))

    # ----- the data protocol of mutransfer.data -----
    def batch(self, split: str, batch_size: int, seq_len=None, generator=None, device="cpu"):
        """Fresh examples (an infinite stream; ``split`` and ``seq_len`` are ignored):
        x (batch_size, dim), y (batch_size, 1)."""
        x = torch.randn(batch_size, len(self.spectrum), generator=generator, dtype=torch.float64)
        x = x * torch.from_numpy(np.sqrt(self.spectrum))
        eps = torch.randn(batch_size, 1, generator=generator, dtype=torch.float64)
        y = x @ torch.from_numpy(self.w_star)[:, None] + self.noise * eps
        return x.float().to(device), y.float().to(device)

    def loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(outputs - y)^2 / 2, averaged over the batch."""
        return 0.5 * ((outputs.float() - y) ** 2).mean()

    def describe(self) -> dict:
        """Name, dim, target noise and tr(H)."""
        return {"name": "linear-teacher", "dim": len(self.spectrum), "noise": self.noise,
                "trace_h": float(self.spectrum.sum())}


def simulate(teacher: LinearTeacher, lrs, batch_size: int, steps: int, *, repeats: int = 8,
             momentum: float = 0.0, w0=None, seed: int = 0) -> np.ndarray:
    """Population loss after ``steps`` of SGD (torch's heavy ball: m = beta m + g, w -= lr m) at
    each lr, for ``repeats`` independent runs; every lr sees the same batches. Returns (n_lrs, repeats).

        >>> losses = simulate(LinearTeacher.make(16), 2.0 ** np.arange(-6, 1), batch_size=8, steps=50)
        >>> losses.mean(1).argmin()
    """
    lrs = np.asarray(lrs, float)
    if steps < 1 or batch_size < 1 or repeats < 1:
        raise ValueError(f"steps, batch_size and repeats must be >= 1; got {steps}, {batch_size}, {repeats}")
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), e.g. 0.9; got {momentum!r}")
    rng = np.random.default_rng(seed)
    d, sd = len(teacher.spectrum), np.sqrt(teacher.spectrum)
    w = np.broadcast_to(np.zeros(d) if w0 is None else np.asarray(w0, float), (len(lrs), repeats, d)).copy()
    m = np.zeros_like(w)
    for _ in range(steps):
        x = rng.normal(size=(repeats, batch_size, d)) * sd
        y = x @ teacher.w_star + teacher.noise * rng.normal(size=(repeats, batch_size))
        resid = np.einsum("rbd,lrd->lrb", x, w) - y
        g = np.einsum("lrb,rbd->lrd", resid, x) / batch_size
        m = momentum * m + g
        w -= lrs[:, None, None] * m
    e = w - teacher.w_star
    out = 0.5 * (np.einsum("lrd,d,lrd->lr", e, teacher.spectrum, e) + teacher.noise ** 2)
    return np.where(np.isfinite(out), out, np.inf)


def train_students(teacher: LinearTeacher, width: int, lrs, batch_size: int, steps: int, *,
                   base_width: int = 16, repeats: int = 4, betas=(0.9, 0.95), eps: float = 1e-8,
                   seed: int = 0) -> np.ndarray:
    """Population loss of muP two-layer linear students ``f(x) = a^T V x`` (V: width x dim) after
    ``steps`` of Adam under a linear decay to 0, at each lr, ``repeats`` runs each; every lr sees
    the same batches. Returns (n_lrs, repeats).

    muP for Adam with m = width / base_width (scaling.md section 3): V is the input role (std
    1/sqrt(dim), lr x1), a the output role (std 1 / (m sqrt(base_width)), lr x 1/m), so eta*
    does not move with width; the student's linear map u = V^T a gives L = (e^T H e + s^2) / 2.

        >>> losses = train_students(LinearTeacher.make(16), 32, 2.0 ** np.arange(-8, -2), 8, 100)
    """
    for name, value in (("width", width), ("base_width", base_width), ("batch_size", batch_size),
                        ("steps", steps), ("repeats", repeats)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int; got {value!r}")
    lrs = np.asarray(lrs, float)
    rng = np.random.default_rng(seed)
    d, sd, m = len(teacher.spectrum), np.sqrt(teacher.spectrum), width / base_width
    shape = (len(lrs), repeats)
    params = [np.broadcast_to(rng.normal(size=(repeats, width, d)) / np.sqrt(d), shape + (width, d)).copy(),
              np.broadcast_to(rng.normal(size=(repeats, width)) / (m * np.sqrt(base_width)), shape + (width,)).copy()]
    mults = [1.0, 1.0 / m]
    moments = [[np.zeros_like(p), np.zeros_like(p)] for p in params]
    (b1, b2) = betas
    for t in range(steps):
        x = rng.normal(size=(repeats, batch_size, d)) * sd
        y = x @ teacher.w_star + teacher.noise * rng.normal(size=(repeats, batch_size))
        V, a = params
        h = np.einsum("rbd,lrnd->lrbn", x, V)
        resid = np.einsum("lrbn,lrn->lrb", h, a) - y
        grads = [np.einsum("lrb,lrn,rbd->lrnd", resid, a, x) / batch_size,
                 np.einsum("lrb,lrbn->lrn", resid, h) / batch_size]
        scale = lrs * (1 - t / steps)
        for p, g, (mo, ve), k in zip(params, grads, moments, mults):
            mo *= b1
            mo += (1 - b1) * g
            ve *= b2
            ve += (1 - b2) * g * g
            step = (mo / (1 - b1 ** (t + 1))) / (np.sqrt(ve / (1 - b2 ** (t + 1))) + eps)
            p -= (scale * k).reshape((-1,) + (1,) * (p.ndim - 1)) * step
    u = np.einsum("lrnd,lrn->lrd", params[0], params[1])
    e = u - teacher.w_star
    out = 0.5 * (np.einsum("lrd,d,lrd->lr", e, teacher.spectrum, e) + teacher.noise ** 2)
    return np.where(np.isfinite(out), out, np.inf)

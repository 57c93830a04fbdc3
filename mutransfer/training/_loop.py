"""One small training loop shared by the coordinate check's users, the sweeper and validation.

``train`` runs ``steps`` optimizer steps on any dataset of the :mod:`mutransfer.data` protocol,
under a warmup + decay schedule that multiplies each param group's *initial* lr (so a Plan's
per-group multipliers are kept), and returns a :class:`TrainResult` with a tidy history.

Divergence ends a run early as a result, not an exception: a non-finite loss or gradient norm,
or a smoothed train loss (EMA, decay ``DIVERGE_SMOOTHING``, bias-corrected) above
``max(DIVERGE_FACTOR * L0, L0 + DIVERGE_MARGIN)`` where ``L0`` is the first step's loss (the loss
at init).

Many processes (``parallel``, :mod:`~mutransfer.training._parallel`) and checkpoints that resume
(``checkpoint``, :mod:`~mutransfer.training._checkpoint`) go through the same loop.

    >>> res = train(model, torch.optim.AdamW(model.parameters(), 1e-3), data.pycorpus(),
    ...             steps=100, batch_size=16, seq_len=64)
"""
from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from mutransfer.training._checkpoint import Checkpoints, latest_checkpoint, load_checkpoint, save_checkpoint
from mutransfer.training._parallel import (check_wrapped, grad_sync, local_batch,
                                           mean_over_ranks, rank_and_world, resolve_device)

SCHEDULES = ("cosine", "linear", "constant")
DTYPES = {"auto": None, "fp32": torch.float32, "float32": torch.float32,
          "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
DIVERGE_FACTOR = 2.0  # a train loss above 2x the loss at init has left the basin ...
DIVERGE_MARGIN = 1.0  # ... or 1 nat above it, whichever is larger (a loss near 0 is not hair-trigger)
DIVERGE_SMOOTHING = 0.9  # the EMA that is compared: one unlucky small batch is not a divergence
# Eval batches come from this fixed seed, not the run's, so every run with the same batch size
# is scored on the same windows (trials at different seeds stay comparable).
EVAL_SEED = 20_240_601
NOISE_DECAY = 0.98  # EMA decay of the noise-scale terms: ~100 steps at steady state
COLUMNS = ("step", "lr", "train_loss", "eval_loss", "grad_norm", "tokens", "seconds")


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` returns.

    history: DataFrame, one row per step: step (1-based), lr (the scheduled lr of the first param
        group divided by its lr_mult: the lr the plan's optimizer was given), train_loss
        (before the step's update), eval_loss (NaN between evals), grad_norm (before clipping),
        tokens (cumulative), seconds (cumulative); plus g2_small, g2_big with ``measure_noise``,
        and max_logit (the largest attention logit of the step's forward, before the clip) with
        ``qk_clip``.
    final_loss: the last eval loss (NaN if the run diverged).
    diverged / reason / diverged_step: why and when the run ended early (reason is also set,
        with diverged False, when the callback stopped it).
    noise: None, or the gradient-noise statistics (see :func:`train`).
    """

    history: "object"
    final_loss: float
    diverged: bool
    reason: str | None
    diverged_step: int | None
    tokens: int
    seconds: float
    steps: int
    noise: dict | None
    device: str


def lr_factor(step: int, steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the peak lr at 0-based ``step``: linear warmup ``(step + 1) / warmup_steps``,
    then with ``p = (step - warmup_steps) / (steps - warmup_steps)``: cosine ``(1 + cos(pi p)) / 2``,
    linear ``1 - p``, or constant ``1``.

        >>> lr_factor(0, 100, 10, "cosine"), lr_factor(10, 100, 10, "cosine")
        (0.1, 1.0)
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    p = (step - warmup_steps) / max(1, steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * p)) if schedule == "cosine" else 1.0 - p


def lr_scheduler(optimizer: torch.optim.Optimizer, steps: int, warmup: float = 0.05,
                 schedule: str = "cosine") -> torch.optim.lr_scheduler.LambdaLR:
    """The loop's schedule for any loop or trainer: a ``LambdaLR`` that sets each param group's
    lr to ``initial_lr * lr_factor(step)`` (:func:`lr_factor`; ``warmup`` as in
    :func:`warmup_steps_of`), so a plan's per-group multipliers are kept. Call ``step()`` after
    each optimizer step.

        >>> opt = plan.optimizer(3e-3)
        >>> sched = lr_scheduler(opt, steps=1000, warmup=0.05)   # or Trainer(optimizers=(opt, sched))
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer; got {steps!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; use one of {', '.join(SCHEDULES)}")
    factor = functools.partial(lr_factor, steps=steps, warmup_steps=warmup_steps_of(warmup, steps),
                               schedule=schedule)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def warmup_steps_of(warmup: float, steps: int) -> int:
    """Warmup length: a fraction of ``steps`` when ``warmup < 1``, else a number of steps."""
    if isinstance(warmup, bool) or not isinstance(warmup, (int, float)) or warmup < 0:
        raise ValueError(f"warmup must be a fraction of steps (0 <= warmup < 1) or a number of "
                         f"steps (>= 1); got {warmup!r}")
    n = round(warmup * steps) if warmup < 1 else int(warmup)
    if n >= steps:
        raise ValueError(f"warmup of {n} steps leaves none of the {steps} steps at the peak lr; "
                         f"use a smaller warmup (e.g. warmup=0.05) or more steps")
    return n


class NoiseMeter:
    """Two-batch gradient-noise statistics (scaling.md section 6), averaged with a bias-corrected
    EMA of the numerator and denominator separately (never of their ratio):

        |G|^2     ~ (B_big |G_big|^2 - B_small |G_small|^2) / (B_big - B_small)
        tr(Sigma) ~ (|G_small|^2 - |G_big|^2) / (1/B_small - 1/B_big),   B_simple = tr(Sigma) / |G|^2
    """

    def __init__(self, b_small: int, b_big: int, decay: float = NOISE_DECAY):
        self.b_small, self.b_big, self.decay = b_small, b_big, decay
        self.sums = {"g2": 0.0, "trace_sigma": 0.0, "loss": 0.0}
        self.weight, self.n = 0.0, 0

    def update(self, g2_small: float, g2_big: float, loss: float) -> None:
        bs, bb = self.b_small, self.b_big
        terms = {"g2": (bb * g2_big - bs * g2_small) / (bb - bs),
                 "trace_sigma": (g2_small - g2_big) / (1 / bs - 1 / bb), "loss": loss}
        for key, value in terms.items():
            self.sums[key] = self.decay * self.sums[key] + (1 - self.decay) * value
        self.weight = self.decay * self.weight + (1 - self.decay)
        self.n += 1

    def result(self) -> dict:
        """b_simple (NaN unless both terms are positive), g2, trace_sigma, loss (train loss under
        the same EMA), n (steps measured), b_small, b_big, decay."""
        avg = {k: (v / self.weight if self.weight else math.nan) for k, v in self.sums.items()}
        ok = avg["g2"] > 0 and avg["trace_sigma"] > 0
        return {"b_simple": avg["trace_sigma"] / avg["g2"] if ok else math.nan, **avg, "n": self.n,
                "b_small": self.b_small, "b_big": self.b_big, "decay": self.decay}


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``"auto"`` -> bf16 autocast on CUDA, fp32 elsewhere; or "fp32" / "bf16".

        >>> resolve_dtype("auto", torch.device("cpu"))
        torch.float32
    """
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    if DTYPES[dtype] is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return DTYPES[dtype]


def _check_args(data, steps, batch_size, grad_accum, schedule, clip, eval_every, eval_batches,
                measure_noise, eval_batch_size=None, world: int = 1) -> None:
    if not (hasattr(data, "batch") and hasattr(data, "loss")):
        raise TypeError(f"data must implement batch(split, batch_size, seq_len, generator, device) "
                        f"and loss(outputs, y), e.g. mutransfer.data.pycorpus(); got {type(data).__name__}")
    optional = [(n, v) for n, v in (("eval_every", eval_every), ("eval_batch_size", eval_batch_size))
                if v is not None]
    counts = [("steps", steps), ("batch_size", batch_size), ("grad_accum", grad_accum),
              ("eval_batches", eval_batches), *optional]
    for name, value in counts:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    if batch_size % grad_accum:
        raise ValueError(f"batch_size {batch_size} is not divisible by grad_accum {grad_accum}; "
                         f"the micro-batch is batch_size // grad_accum, so pick a multiple")
    for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size or batch_size)):
        if world > 1 and value % (world * grad_accum):
            raise ValueError(f"{name} {value} does not split into {world} ranks x {grad_accum} "
                             f"micro-batches of equal size; use a multiple of {world * grad_accum}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; use one of {', '.join(SCHEDULES)}")
    if not isinstance(clip, (int, float)) or clip < 0:
        raise ValueError(f"clip must be a max grad norm >= 0 (0 disables clipping); got {clip!r}")
    if measure_noise and grad_accum < 2:
        raise ValueError(f"measure_noise compares the first micro-batch's gradient with the whole "
                         f"batch's, so it needs grad_accum >= 2; got grad_accum={grad_accum}. "
                         f"Set grad_accum=2 (or more) and a batch_size divisible by it")


class _Run:
    """The mutable state of one run; :func:`train` is its public face."""

    def __init__(self, model, optimizer, data, device, dtype, batch_size, seq_len, grad_accum,
                 eval_batches, clip, eval_batch_size, parallel="none"):
        self.model, self.opt, self.data, self.device = model, optimizer, data, device
        self.autocast = dict(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32)
        self.batch_size, self.seq_len, self.grad_accum, self.clip = batch_size, seq_len, grad_accum, clip
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        self.qk_clip = None
        self.parallel = parallel
        self.rank, self.world = rank_and_world() if parallel != "none" else (0, 1)
        gen = torch.Generator().manual_seed(EVAL_SEED)
        self.eval_set = [self.local(data.batch("val", eval_batch_size, seq_len, gen, device))
                         for _ in range(eval_batches)]

    def local(self, batch):
        """This rank's rows of a global batch (every rank draws the same one)."""
        return local_batch(batch, self.rank, self.world)

    def mean(self, value: float) -> float:
        """``value`` averaged over the ranks (itself in one process)."""
        return mean_over_ranks([value], self.device)[0] if self.world > 1 else value

    def micro_batches(self, x, y):
        return zip(x.chunk(self.grad_accum), y.chunk(self.grad_accum))

    def forward_loss(self, x, y) -> torch.Tensor:
        with torch.autocast(**self.autocast):
            return self.data.loss(self.model(x), y)

    def grad_sq(self) -> float:
        grads = [p.grad for p in self.params if p.grad is not None]
        return float(torch.nn.utils.get_total_norm(grads)) ** 2 if grads else 0.0

    def step_grads(self, generator, noise: bool):
        """Accumulate the batch's gradient; returns (mean loss, |G_small|^2 or None)."""
        self.opt.zero_grad(set_to_none=True)
        x, y = self.local(self.data.batch("train", self.batch_size, self.seq_len, generator, self.device))
        total, g2_small = 0.0, None
        for i, (xb, yb) in enumerate(self.micro_batches(x, y)):
            # ranks reduce gradients once, after the last micro-batch (after each when the first
            # micro-batch's gradient is measured on its own)
            with grad_sync(self.model, noise or i == self.grad_accum - 1):
                loss = self.forward_loss(xb, yb)
                (loss / self.grad_accum).backward()
            total += float(loss.detach())
            if noise and i == 0:  # the first micro-batch alone: grads hold G_small / grad_accum
                g2_small = self.grad_sq() * self.grad_accum**2
        return self.mean(total / self.grad_accum), g2_small

    def clip_grads(self) -> float:
        if self.clip > 0:
            return float(torch.nn.utils.clip_grad_norm_(self.params, self.clip))
        return self.grad_sq() ** 0.5

    @torch.no_grad()
    def evaluate(self) -> float:
        self.model.eval()
        losses = [float(self.forward_loss(xb, yb)) for x, y in self.eval_set
                  for xb, yb in self.micro_batches(x, y)]
        self.model.train()
        return self.mean(sum(losses) / len(losses))


class _Smoothed:
    """Bias-corrected EMA of the train loss, and the loss at init it is compared with."""

    def __init__(self, decay: float = DIVERGE_SMOOTHING):
        self.decay, self.sum, self.weight, self.start = decay, 0.0, 0.0, None

    def update(self, loss: float) -> float:
        self.start = loss if self.start is None else self.start
        self.sum = self.decay * self.sum + (1 - self.decay) * loss
        self.weight = self.decay * self.weight + (1 - self.decay)
        return self.value

    @property
    def value(self) -> float:
        """The current smoothed loss (NaN before the first update)."""
        return self.sum / self.weight if self.weight else math.nan


def _divergence(loss: float, what: str, smooth: _Smoothed | None = None) -> str | None:
    if not math.isfinite(loss):
        return f"non-finite {what} ({loss})"
    if smooth is None:
        return None
    avg, start = smooth.update(loss), smooth.start
    if avg > max(DIVERGE_FACTOR * start, start + DIVERGE_MARGIN):
        return f"{what} {avg:.4g} (smoothed) far above the initial loss {start:.4g}"
    return None


def train(model: nn.Module, optimizer: torch.optim.Optimizer, data, *, steps: int, batch_size: int,
          seq_len: int | None, schedule: str = "cosine", warmup: float = 0.05, clip: float = 1.0,
          device: str | torch.device = "auto", dtype: str = "auto", grad_accum: int = 1,
          eval_every: int | None = None, eval_batches: int = 4, eval_batch_size: int | None = None,
          seed: int = 0,
          callback: Callable[[int, float], bool | None] | None = None,
          measure_noise: bool = False, noise_decay: float = NOISE_DECAY,
          progress: bool = False, qk_clip=None, parallel: str = "none",
          checkpoint: Checkpoints | None = None,
          log: Callable[[dict, torch.optim.Optimizer], None] | None = None) -> TrainResult:
    """Train ``model`` for ``steps`` optimizer steps on ``data``; returns a :class:`TrainResult`.

    Each step draws one batch of ``batch_size`` examples (windows of ``seq_len`` tokens; None for
    synthetic data) from a generator seeded with ``seed``, split into ``grad_accum`` micro-batches.
    Group lrs follow ``initial_lr * lr_factor(step)`` (LambdaLR; warmup: fraction of steps if < 1,
    else steps). Gradients are clipped to norm ``clip`` (0: off). Eval: mean loss over
    ``eval_batches`` fixed val batches of ``eval_batch_size`` examples (default ``batch_size``; fix it
    to compare runs of different batch sizes on one eval set), seeded by ``EVAL_SEED``, every
    ``eval_every`` steps and at the end; ``callback(step, eval_loss)`` runs after each eval, a truthy return stops the run, and
    its exceptions (e.g. ``optuna.TrialPruned``) propagate. ``device="auto"``: CUDA if present;
    ``dtype="auto"``: bf16 autocast on CUDA, fp32 on CPU. Deterministic on CPU for a given seed.

    ``measure_noise`` (needs ``grad_accum >= 2``): after warmup, each step records |G_small|^2 (first
    micro-batch, ``B_small = batch_size // grad_accum``) and |G_big|^2 (the whole batch,
    ``B_big = batch_size``; both in examples, i.e. sequences for byte corpora) before clipping;
    ``noise`` holds ``b_simple = tr(Sigma) / |G|^2``, g2, trace_sigma and loss, each a
    bias-corrected EMA with decay ``noise_decay`` (:class:`NoiseMeter`;
    0.98 weighs about the last 100 steps; closer to 1 averages longer at a fixed point).
    ``progress`` draws a tqdm bar (steps, with the smoothed train loss and the last eval loss).
    ``qk_clip`` (a :class:`mutransfer.QKClip` on ``model``) is applied after each
    optimizer step and its max logit logged as the history column ``max_logit``.

    ``parallel`` ("ddp" or "fsdp", the model wrapped so by :func:`wrap_model`, under torchrun):
    every rank draws the same global batch and trains on its ``batch_size / world_size`` rows;
    losses (train and eval) are averaged over ranks, QK-Clip's max logits maxed over them, so a
    run equals one process's up to float summation order. ``checkpoint``
    (:class:`Checkpoints`) writes resumable checkpoints every K steps and at the end, or resumes
    from the newest one: the resumed run ends as the uninterrupted one would (bit for bit on CPU).

        >>> res = train(model, opt, mutransfer.data.pycorpus(), steps=50, batch_size=16, seq_len=64)
        >>> res.final_loss, res.history.tail()
    """
    check_wrapped(model, parallel)
    world = rank_and_world()[1] if parallel != "none" else 1
    _check_args(data, steps, batch_size, grad_accum, schedule, clip, eval_every, eval_batches,
                measure_noise, eval_batch_size, world)
    if not 0 <= noise_decay < 1:
        raise ValueError(f"noise_decay must be in [0, 1); got {noise_decay!r} (e.g. 0.98)")
    if checkpoint is not None and not isinstance(checkpoint, Checkpoints):
        raise TypeError(f"checkpoint must be a mutransfer.training.Checkpoints or None; got "
                        f"{type(checkpoint).__name__}")
    n_warmup = warmup_steps_of(warmup, steps)
    dev = resolve_device(device)
    if parallel != "none" and dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())  # init_parallel set LOCAL_RANK's
    # a wrapped model was placed before wrapping (FSDP2 has sharded it on its device)
    run = _Run(model.to(dev) if parallel == "none" else model, optimizer, data, dev,
               resolve_dtype(dtype, dev), batch_size, seq_len, grad_accum, eval_batches, clip,
               eval_batch_size or batch_size, parallel)
    run.qk_clip = qk_clip
    fork = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=fork):  # seeds dropout etc. without touching the caller's RNG
        torch.manual_seed(seed)
        meter = NoiseMeter(batch_size // grad_accum, batch_size, noise_decay) if measure_noise else None
        with _bar(steps, progress and run.rank == 0) as bar:
            return _loop(run, steps, n_warmup, schedule, eval_every, seed, callback, meter, bar,
                         checkpoint, log if run.rank == 0 else None)


def _bar(steps: int, show: bool):
    from tqdm.auto import tqdm

    return tqdm(total=steps, unit="step", desc="train", disable=not show, dynamic_ncols=True)


@dataclass
class _Progress:
    """The loop's own state between steps: what a checkpoint's ``loop.pt`` keeps besides the
    RNG, data and scheduler states."""

    rows: list
    smooth: "_Smoothed"
    final: float = math.nan
    done: int = 0
    seconds: float = 0.0  # spent before this process took over (a resumed run's earlier part)


def _loop(run: _Run, steps, n_warmup, schedule, eval_every, seed, callback, meter, bar, checkpoint=None,
          log=None):
    import pandas as pd

    factor = functools.partial(lr_factor, steps=steps, warmup_steps=n_warmup, schedule=schedule)
    sched = lr_scheduler(run.opt, steps, n_warmup, schedule)
    group = run.opt.param_groups[0]
    base_lr = group["initial_lr"] / group.get("lr_mult", 1.0)  # the lr the caller's plan was given
    gen = torch.Generator().manual_seed(seed)
    per_step = run.batch_size * (run.seq_len or 1)
    state = _Progress(rows=[], smooth=_Smoothed())
    if checkpoint is not None and checkpoint.resume:
        state = _resume(run, checkpoint, sched, gen, meter)
        bar.update(state.done)
    elif checkpoint is not None and checkpoint.every is not None:
        _refuse_earlier_run(checkpoint.folder)
    reason, diverged_step, t0 = None, None, time.perf_counter()
    run.model.train()
    for s in range(state.done, steps):
        row, reason = _step(run, gen, state.smooth, meter if s >= n_warmup else None, meter is not None)
        row.update(step=s + 1, lr=base_lr * factor(s), tokens=(s + 1) * per_step)
        if reason is None:
            sched.step()
            state.done = s + 1
            if (eval_every and state.done % eval_every == 0) or state.done == steps:
                row["eval_loss"] = state.final = run.evaluate()
                reason = _divergence(state.final, "eval loss")
        row["seconds"] = state.seconds + time.perf_counter() - t0
        state.rows.append(row)
        if log is not None:  # live curves (TensorBoard) while a long run trains
            log(row, run.opt)
        _advance(bar, state.smooth, state.final)
        if reason is not None:
            state.final, diverged_step = math.nan, s + 1
            break
        if checkpoint is not None and checkpoint.due(state.done, steps):
            _save(run, checkpoint, state, sched, gen, meter, state.seconds + time.perf_counter() - t0)
        if not math.isnan(row["eval_loss"]) and callback is not None and callback(state.done, state.final):
            reason = f"stopped by callback at step {state.done}"
            break
    extra = (["g2_small", "g2_big"] if meter else []) + (["max_logit"] if run.qk_clip is not None else [])
    history = pd.DataFrame(state.rows, columns=list(COLUMNS) + extra)
    return TrainResult(history, state.final, diverged_step is not None, reason, diverged_step,
                       len(state.rows) * per_step, state.seconds + time.perf_counter() - t0, state.done,
                       meter.result() if meter else None, str(run.device))


def _save(run: _Run, checkpoint: Checkpoints, state: _Progress, sched, gen, meter, seconds: float) -> None:
    cuda = run.device.type == "cuda"
    loop_state = {"step": state.done, "rows": state.rows, "final": state.final, "seconds": seconds,
                  "smooth": [state.smooth.sum, state.smooth.weight, state.smooth.start],
                  "meter": None if meter is None else [meter.sums, meter.weight, meter.n],
                  "scheduler": sched.state_dict(), "data_rng": gen.get_state(),
                  "torch_rng": torch.get_rng_state(),
                  "cuda_rng": torch.cuda.get_rng_state(run.device) if cuda else None}
    save_checkpoint(checkpoint.folder, state.done, run.model, run.opt, loop_state,
                    checkpoint.fingerprint, run.parallel)


def _refuse_earlier_run(folder) -> None:
    """A new run would mix its checkpoints with an earlier run's (whose newer steps a later
    resume would pick): resume that run or move its checkpoints out of the way first."""
    found = latest_checkpoint(folder, warn=False)
    if found is not None:
        raise ValueError(f"{folder} holds checkpoints of an earlier run (newest: {found.name}); "
                         f"continue it with --resume (resume=True), or remove that folder (or "
                         f"give another --out) to start anew")


def _resume(run: _Run, checkpoint: Checkpoints, sched, gen, meter) -> _Progress:
    """Load the newest checkpoint into the model, optimizer, scheduler, RNGs and the loop."""
    path = latest_checkpoint(checkpoint.folder)
    if path is None:
        raise ValueError(f"no checkpoint to resume from in {checkpoint.folder}; start the run "
                         f"without resuming (with [train] checkpoint_every = K it writes one "
                         f"every K steps), or point to the folder that has them")
    saved = load_checkpoint(path, run.model, run.opt, checkpoint.fingerprint, run.parallel)
    sched.load_state_dict(saved["scheduler"])
    gen.set_state(saved["data_rng"])
    torch.set_rng_state(saved["torch_rng"])
    if saved["cuda_rng"] is not None and run.device.type == "cuda":
        torch.cuda.set_rng_state(saved["cuda_rng"], run.device)
    if (saved["meter"] is None) != (meter is None):
        raise ValueError(f"the checkpoint {path} was written with measure_noise="
                         f"{saved['meter'] is not None}; resume with the same setting")
    if meter is not None:
        meter.sums, meter.weight, meter.n = saved["meter"]
    smooth = _Smoothed()
    smooth.sum, smooth.weight, smooth.start = saved["smooth"]
    return _Progress(rows=list(saved["rows"]), smooth=smooth, final=saved["final"],
                     done=saved["step"], seconds=saved["seconds"])


def _advance(bar, smooth: "_Smoothed", eval_loss: float) -> None:
    if not bar.disable:
        bar.set_postfix(loss=f"{smooth.value:.4f}", eval=f"{eval_loss:.4f}", refresh=False)
        bar.update()


def _step(run: _Run, gen, smooth: _Smoothed, meter: NoiseMeter | None, noise_columns: bool):
    """One optimizer step (unless the loss or gradient diverged): returns (history row, reason)."""
    loss, g2_small = run.step_grads(gen, meter is not None)
    row = {"train_loss": loss, "eval_loss": math.nan, "grad_norm": math.nan}
    if noise_columns:
        row["g2_small"] = math.nan if g2_small is None else g2_small
        row["g2_big"] = math.nan
    reason = _divergence(loss, "train loss", smooth)
    if reason is not None:
        return row, reason
    row["grad_norm"] = norm = run.clip_grads()  # the pre-clip norm
    reason = _divergence(norm, "gradient norm")
    if reason is None:
        if meter is not None:
            row["g2_big"] = norm**2
            meter.update(g2_small, norm**2, loss)
        run.opt.step()
    if run.qk_clip is not None:  # after the step (K2); a skipped step only resets the record
        run.qk_clip.reduce_over_ranks_()  # each rank saw its slice of the batch: clip alike
        run.qk_clip.clip_()
        row["max_logit"] = run.qk_clip.max_logit()
    return row, reason

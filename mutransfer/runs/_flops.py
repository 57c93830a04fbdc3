"""Training compute: parameter counts of the config's model and the FLOPs of a run, 6 N D.

Training one token costs about 6 N FLOPs for N parameters (2 N forward, 4 N backward; attention's
own term is left out), so a run on D tokens costs 6 N D. The budget ladder states its cost
beside one target run's with these (issue 28).

    >>> n = count_params(cfg, width=128)
    >>> training_flops(n, 786432)
"""
from __future__ import annotations

from mutransfer.runs._config import ExperimentConfig

FLOPS_PER_PARAM_TOKEN = 6


def count_params(cfg: ExperimentConfig, width: int, depth: int | None = None) -> int:
    """N, the parameters of the config's model at ``width`` (and ``depth`` blocks), built on the
    meta device (no memory, no init).

        >>> count_params(load_config("sweeps/gpt-cpu-ladder.toml"), 32)
    """
    import torch

    from mutransfer.models import zoo
    from mutransfer.runs._trial import config_factory

    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive int; got {width!r}")
    factory = config_factory(cfg, zoo.load_factory(cfg.model.factory))
    with torch.device("meta"):
        model = factory(width=width, **({} if depth is None else {"depth": depth}))
    return int(sum(p.numel() for p in model.parameters()))


def training_flops(params: int, tokens: float) -> float:
    """6 N D: the FLOPs of training ``params`` parameters on ``tokens`` tokens.

        >>> training_flops(1_000_000, 1e6)
        6000000000000.0
    """
    return float(FLOPS_PER_PARAM_TOKEN * params * tokens)


def sweep_tokens(cfg: ExperimentConfig) -> float:
    """The tokens one sweep of ``cfg`` trains on, all trials together: with a grid, every point's
    budget (its swept ``tokens``, else ``[train] tokens``, else steps x batch x seq_len); otherwise
    ``[sweep] trials`` runs at the mean of those budgets.

        >>> sweep_tokens(load_config("sweeps/gpt-cpu-ladder.toml"))   # 7 lrs x 5 batches x (D + 2D + 4D)
        12042240.0
    """
    import itertools

    space = cfg.sweep.space
    names = [k for k, v in space.items() if isinstance(v, list)]
    points = [dict(zip(names, combo)) for combo in itertools.product(*(space[k] for k in names))] or [{}]
    per = [_run_tokens(cfg, p) for p in points]
    if cfg.sweep.sampler == "grid":
        return float(sum(per))
    return float(cfg.sweep.trials * sum(per) / len(per))


def _run_tokens(cfg: ExperimentConfig, point: dict) -> float:
    tokens = point.get("tokens", cfg.train.tokens)
    if tokens is not None:
        return float(tokens)
    batch = point.get("batch_size", cfg.train.batch_size)
    return float(cfg.train.steps * batch * cfg.tokens_per_example())

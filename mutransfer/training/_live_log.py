"""Live curves of a long run: each step's row written as TensorBoard scalars while it trains.

:func:`~mutransfer.train` calls ``log(row, optimizer)`` after every step on rank 0 (``row`` is the
history row: step, lr, train_loss, eval_loss, grad_norm, tokens, seconds, max_logit when logged).
:class:`TensorBoardLog` turns it into the scalars ``loss/train``, ``loss/eval``, ``grad_norm``,
``lr/<group>`` (each param group's scheduled lr, named by its role), ``max_logit`` and
``tokens_per_second``; ``tensorboard --logdir reports/<name>/train-w<W>/tensorboard`` draws them.

    >>> log = TensorBoardLog("reports/gpt/train-w512/tensorboard")
    >>> res = train(model, opt, data, steps=1000, batch_size=32, seq_len=64, log=log); log.close()
"""
from __future__ import annotations

import math
from pathlib import Path

LOGS = ("none", "tensorboard")  # [train] log


class TensorBoardLog:
    """Writes each step's history row as TensorBoard scalars into ``folder`` (event files).

    Needs the ``tensorboard`` package (``pip install -e ".[tensorboard]"``): without it the
    constructor is an ImportError naming that command, before any training.

        >>> log = TensorBoardLog(tmp_path / "tb")
        >>> log({"step": 1, "train_loss": 2.3, "lr": 1e-3, "tokens": 64, "seconds": 0.1}, opt)
    """

    def __init__(self, folder: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ImportError(f"[train] log = \"tensorboard\" needs the tensorboard package ({err}); "
                              f"pip install -e \".[tensorboard]\" (or pip install tensorboard)") from None
        self.folder = Path(folder)
        self.writer = SummaryWriter(log_dir=str(self.folder))

    def __call__(self, row: dict, optimizer) -> None:
        step = int(row["step"])
        scalars = {"loss/train": row.get("train_loss"), "loss/eval": row.get("eval_loss"),
                   "grad_norm": row.get("grad_norm"), "max_logit": row.get("max_logit")}
        seconds, tokens = row.get("seconds"), row.get("tokens")
        if seconds and tokens:
            scalars["tokens_per_second"] = tokens / seconds
        for i, group in enumerate(optimizer.param_groups):
            scalars[f"lr/{i}-{group.get('role', 'group')}"] = group["lr"]
        for tag, value in scalars.items():
            if value is not None and math.isfinite(float(value)):
                self.writer.add_scalar(tag, float(value), step)

    def close(self) -> None:
        """Flush the event file and close it."""
        self.writer.close()

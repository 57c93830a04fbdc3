"""Training: the data (:mod:`~mutransfer.training.data`: pycorpus, text files, synthetic tasks),
the loop that every trial, check and target run shares (:func:`train`), many-process training
(:func:`init_parallel`, :func:`wrap_model`, :func:`local_batch`: DDP and FSDP2 under torchrun,
``torch.compile``), checkpoints that resume (:class:`Checkpoints`), the schedule for any loop or
trainer (:func:`lr_scheduler`), and the teacher-student task whose noise scales are known exactly
(:mod:`~mutransfer.training.teacher`).

May import :mod:`mutransfer.optim`, :mod:`mutransfer.core` and :mod:`mutransfer.models`.

    >>> res = mutransfer.training.train(model, opt, mutransfer.data.pycorpus(), steps=50,
    ...                                 batch_size=16, seq_len=64)
"""
from mutransfer.training import data, teacher
from mutransfer.training._checkpoint import Checkpoints, flat_settings, latest_checkpoint
from mutransfer.training._live_log import LOGS, TensorBoardLog
from mutransfer.training._loop import (TrainResult, lr_factor, lr_scheduler, resolve_device,
                                       resolve_dtype, train)
from mutransfer.training._parallel import (PARALLEL, init_parallel, is_main_process, local_batch,
                                           rank_and_world, wrap_model)

__all__ = ["Checkpoints", "LOGS", "PARALLEL", "TensorBoardLog", "TrainResult", "data", "flat_settings", "init_parallel",
           "is_main_process", "latest_checkpoint", "local_batch", "lr_factor", "lr_scheduler",
           "rank_and_world", "resolve_device", "resolve_dtype", "teacher", "train", "wrap_model"]

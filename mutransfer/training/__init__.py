"""Training: the data (:mod:`~mutransfer.training.data`: pycorpus, text files, synthetic tasks),
the loop that every trial, check and target run shares (:func:`train`), and the teacher-student
task whose noise scales are known exactly (:mod:`~mutransfer.training.teacher`).

May import :mod:`mutransfer.optim`, :mod:`mutransfer.core` and :mod:`mutransfer.models`.

    >>> res = mutransfer.training.train(model, opt, mutransfer.data.pycorpus(), steps=50,
    ...                                 batch_size=16, seq_len=64)
"""
from mutransfer.training import data, teacher
from mutransfer.training._loop import TrainResult, lr_factor, resolve_device, resolve_dtype, train

__all__ = ["TrainResult", "data", "lr_factor", "resolve_device", "resolve_dtype", "teacher", "train"]

"""Your own dataset from ``[data] factory``: a function, named ``"module:function"`` or
``"path/to/file.py:function"``, called with no arguments, returning an object with the protocol
of :mod:`mutransfer.training.data` (``batch``, ``loss``, ``describe``).

    >>> ds = from_factory("my_data.py:make_dataset")
    >>> x, y = ds.batch("train", 8, 64, torch.Generator().manual_seed(0), "cpu")
"""
from __future__ import annotations

import inspect

PROTOCOL = ("batch", "loss", "describe")
SIGNATURE = "batch(split, batch_size, seq_len, generator, device), loss(outputs, y) and describe()"


def from_factory(spec: str):
    """The dataset that the function ``spec`` returns: ``"package.module:function"`` (imported)
    or ``"path/to/file.py:function"`` (loaded by path, relative to the working directory like
    ``[model] factory``; its folder goes at the *end* of ``sys.path`` so it may import sibling
    modules without shadowing installed ones). The function takes no arguments. A return value
    without ``batch``, ``loss`` or ``describe`` is a TypeError naming the missing methods.

        >>> ds = from_factory("my_data.py:make_dataset")
        >>> ds.describe()
    """
    function = _resolve(spec)
    try:
        required = [p.name for p in inspect.signature(function).parameters.values()
                    if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD,
                                                          p.KEYWORD_ONLY)]
    except (TypeError, ValueError):
        required = []
    if required:
        raise TypeError(f"data factory {spec!r} requires {', '.join(required)}; it is called with no "
                        f"arguments: give them defaults or wrap it in a function of none")
    dataset = function()
    check_protocol(dataset, f"data factory {spec!r}")
    return dataset


def check_protocol(dataset, where: str = "the dataset") -> None:
    """Raise a TypeError naming each protocol method ``dataset`` lacks (``batch``, ``loss``,
    ``describe``); return None when it has them all.

        >>> check_protocol(pycorpus())
        >>> check_protocol([1, 2])        # TypeError: ... lacks batch, loss, describe
    """
    missing = [name for name in PROTOCOL if not callable(getattr(dataset, name, None))]
    if missing:
        raise TypeError(f"{where} returned a {type(dataset).__name__}, which lacks "
                        f"{', '.join(missing)}; return an object with {SIGNATURE} "
                        f"(see the example in mutransfer.training.data)")


def _resolve(spec: str):
    from mutransfer.models import load_object

    function = load_object(spec, what="[data] factory", example="make_dataset")
    if not callable(function):
        raise TypeError(f"[data] factory {spec!r} is {type(function).__name__}, not a function; point "
                        f"it at a function of no arguments returning the dataset")
    return function

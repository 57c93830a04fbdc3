"""Your own dataset from ``[data] factory``: a function, named ``"module:function"`` or
``"path/to/file.py:function"``, called with no arguments, returning an object with the protocol
of :mod:`mutransfer.training.data` (``batch``, ``loss``, ``describe``).

    >>> ds = from_factory("my_data.py:make_dataset")
    >>> x, y = ds.batch("train", 8, 64, torch.Generator().manual_seed(0), "cpu")
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path

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
    if not isinstance(spec, str) or spec.count(":") < 1 or not all(spec.rpartition(":")[::2]):
        raise ValueError(f"[data] factory {spec!r} is malformed; write 'package.module:function' "
                         f"or 'path/to/file.py:make_dataset'")
    where, _, name = spec.rpartition(":")
    module = _load_file(Path(where)) if where.endswith(".py") else _import(where)
    function = getattr(module, name, None)
    if not callable(function):
        public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise ValueError(f"{where!r} has no function {name!r}; callables there: {public[:12]}. "
                         f"Fix the name after ':' in [data] factory {spec!r}")
    return function


def _import(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        raise ValueError(f"[data] factory: cannot import module {name!r} ({err}); check the spelling, "
                         f"or give a file path ending in .py ('path/to/file.py:make_dataset')") from err


def _load_file(file: Path):
    if not file.is_file():
        raise ValueError(f"[data] factory file {str(file)!r} not found (resolved: {file.resolve()}); "
                         f"give a path to an existing .py file, relative to the working directory")
    resolved = file.resolve()
    name = f"mutransfer_data_{hashlib.sha256(str(resolved).encode()).hexdigest()[:16]}"
    if name in sys.modules:  # loaded once per process, like an import
        return sys.modules[name]
    folder = str(resolved.parent)
    if folder not in sys.path:  # last: siblings import, installed modules keep their names
        sys.path.append(folder)
    spec = importlib.util.spec_from_file_location(name, resolved)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # lets dataclasses/pickle inside the user's file find it
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module

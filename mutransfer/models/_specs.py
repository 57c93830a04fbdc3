"""Names of user code in a config: ``"package.module:name"`` (imported) or ``"path/to/file.py:name"``
(loaded by its path). Both ``[model] factory`` and ``[data] factory`` resolve through here.

    >>> load_object("mutransfer.zoo:gpt", what="factory")
    <function gpt at ...>
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path


def load_object(spec: str, *, what: str = "factory", example: str = "make_model"):
    """The object ``spec`` names: ``"package.module:name"`` is imported; ``"path/to/file.py:name"``
    is loaded once per process by its path with an importlib spec (relative to the working
    directory), its folder put at the *end* of ``sys.path``: the file may import its sibling
    modules, and a sibling named like an installed or standard module (a ``json.py``) never
    shadows that module for the rest of the process. Errors name ``what`` and the fix.

        >>> load_object("mutransfer.zoo:gpt").__name__
        'gpt'
    """
    if not isinstance(spec, str) or spec.count(":") < 1 or not all(spec.rpartition(":")[::2]):
        raise ValueError(f"{what} spec {spec!r} is malformed; write 'package.module:function' "
                         f"(e.g. 'mutransfer.zoo:gpt') or 'path/to/file.py:{example}'")
    where, _, name = spec.rpartition(":")
    module = _load_file(where, what) if where.endswith(".py") else _import(where, what, example)
    if not hasattr(module, name):
        public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise ValueError(f"{where!r} has no attribute {name!r}; callables there: {public[:12]}. "
                         f"Fix the name after ':' in {what} {spec!r}")
    return getattr(module, name)


def _import(name: str, what: str, example: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        raise ValueError(f"{what}: cannot import module {name!r} ({err}); check the spelling, or give "
                         f"a file path ending in .py ('path/to/file.py:{example}')") from err


def _load_file(path: str, what: str):
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"{what} file {path!r} not found (resolved: {file.resolve()}); "
                         f"give a path to an existing .py file, relative to the working directory")
    resolved = file.resolve()
    name = f"mutransfer_user_{hashlib.sha256(str(resolved).encode()).hexdigest()[:16]}"
    if name in sys.modules:  # loaded once per process, like an import
        return sys.modules[name]
    if str(resolved.parent) not in sys.path:  # last: siblings import, installed modules keep their names
        sys.path.append(str(resolved.parent))
    spec = importlib.util.spec_from_file_location(name, resolved)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # lets dataclasses/pickle inside the user's file find it
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module

"""Checkpoints that resume a run where it stopped, bit for bit on one CPU process.

A checkpoint is a folder ``step-<N>/`` in the run's checkpoint folder, holding

- the model's and the optimizer's state, written by ``torch.distributed.checkpoint`` (DCP) from
  ``get_state_dict``: sharded as the run holds them (each rank writes its own shards, names
  without the ``module.`` / ``_orig_mod.`` wrapper parts), so a run on another number of ranks,
  or wrapped otherwise, reads it back resharded. The optimizer's state is all of it, whatever
  the optimizer keeps (Muon's momentum, AdamW's moments and step, the spectral-decay vectors);
- ``loop.pt``: what the loop needs to go on (step, history so far, LR scheduler, the data
  generator's and torch's RNG states, the divergence and noise statistics), written by rank 0;
- ``meta.json``: the step, the ranks that wrote it and the run's *fingerprint*: the settings the
  run depends on (config, plan, width, steps, seed). A resume with other settings is refused,
  naming each one that differs.

Writes are atomic and survive a power cut: everything goes to ``.tmp-step-<N>/``, each file and the
folder are fsynced, and only then is it renamed to ``step-<N>/`` (the parent fsynced too); the
newest :data:`KEEP` complete checkpoints stay, older ones are removed. ``meta.json`` holds a
SHA-256 of every other file, so a truncated or corrupt newest checkpoint is detected and a resume
falls back to the one before, with a warning. A crash mid-write leaves a ``.tmp-`` folder, which
is never read. Like any pickle, a checkpoint folder runs code when read (DCP's ``.metadata``,
``loop.pt`` is read with ``weights_only``): resume only from folders you trust.

    >>> ckpt = Checkpoints("reports/gpt/train-w512/checkpoints", every=100, fingerprint={"lr": 0.01})
    >>> res = train(model, opt, data, steps=1000, batch_size=32, seq_len=64, checkpoint=ckpt)
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mutransfer.training._parallel import rank_and_world

STEP_DIR = re.compile(r"step-(\d+)")
TMP_PREFIX = ".tmp-"
META = "meta.json"
LOOP = "loop.pt"
KEEP = 2  # complete checkpoints kept: the newest may be cut short by a power cut after its rename


@dataclass(frozen=True)
class Checkpoints:
    """Where :func:`~mutransfer.train` keeps checkpoints, how often, and whether it resumes.

    ``every``: write one every K steps and at the end (None: write none, e.g. only resume);
    a new run refuses a folder that holds an earlier run's checkpoints (resume it, or move them).
    ``resume``: continue from the newest checkpoint in ``folder`` (a ValueError when there is
    none, or when its fingerprint differs from ``fingerprint``).
    ``fingerprint``: the run's settings as a flat dict of JSON values (:func:`flat_settings`).

        >>> Checkpoints("ckpt", every=50, resume=True, fingerprint={"train.lr": 0.01})
    """

    folder: str | Path
    every: int | None = None
    resume: bool = False
    fingerprint: dict = field(default_factory=dict)

    def __post_init__(self):
        every = self.every
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            raise ValueError(f"checkpoint every must be a positive number of steps or None; got "
                             f"{every!r} (e.g. every=100)")
        if not isinstance(self.resume, bool):
            raise TypeError(f"resume must be True or False; got {self.resume!r}")
        if not isinstance(self.fingerprint, dict):
            raise TypeError(f"fingerprint must be a dict of settings; got {type(self.fingerprint).__name__}")
        try:
            json.dumps(self.fingerprint, allow_nan=True)
        except TypeError as err:
            raise TypeError(f"fingerprint values must be JSON numbers, strings, lists or None "
                            f"(use flat_settings()): {err}") from None
        object.__setattr__(self, "folder", Path(self.folder))

    def due(self, step: int, steps: int) -> bool:
        """Whether to write after ``step`` (1-based) of ``steps``: every ``every`` and at the end."""
        return self.every is not None and (step % self.every == 0 or step == steps)


def flat_settings(value, prefix: str = "") -> dict:
    """A nested dict as one level of dotted keys (tuples as lists), for a fingerprint.

        >>> flat_settings({"train": {"lr": 0.01, "betas": (0.9, 0.95)}, "seed": 0})
        {'train.lr': 0.01, 'train.betas': [0.9, 0.95], 'seed': 0}
    """
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out.update(flat_settings(item, f"{prefix}{key}."))
        return out if prefix or out else {}
    key = prefix[:-1]
    return {key: list(value) if isinstance(value, tuple) else value}


def fingerprint_difference(saved: dict, now: dict) -> list[str]:
    """One ``"key: <saved> (checkpoint) vs <now> (this run)"`` line per setting that differs
    (a key only one side has reads ``-`` on the other).

        >>> fingerprint_difference({"lr": 0.01}, {"lr": 0.02})
        ['lr: 0.01 (checkpoint) vs 0.02 (this run)']
    """
    def same(a, b):
        both_nan = isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
        return a == b or both_nan

    keys = sorted(set(saved) | set(now))
    return [f"{k}: {saved.get(k, '-')!r} (checkpoint) vs {now.get(k, '-')!r} (this run)"
            for k in keys if not same(saved.get(k, "-"), now.get(k, "-"))]


def checkpoints_newest_first(folder: str | Path) -> list[Path]:
    """Every ``step-<N>/`` folder in ``folder``, newest first (complete or not: see :func:`damage`)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := STEP_DIR.fullmatch(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def damage(path: str | Path) -> str | None:
    """Why the checkpoint at ``path`` cannot be trusted (no or unreadable ``meta.json``, a file
    missing, or one whose SHA-256 differs from the one ``meta.json`` recorded), or None.
    Checkpoints written before checksums existed are checked for their meta.json only.

        >>> damage("ckpt/step-000300")
        'loop.pt: SHA-256 differs from meta.json (truncated or corrupt)'
    """
    path = Path(path)
    try:
        meta = json.loads((path / META).read_text())
    except (OSError, ValueError) as err:
        return f"{META}: {type(err).__name__}: {err}"
    for name, digest in meta.get("sha256", {}).items():
        file = path / name
        if not file.is_file():
            return f"{name}: missing"
        if _sha256(file) != digest:
            return f"{name}: SHA-256 differs from {META} (truncated or corrupt)"
    return None


def latest_checkpoint(folder: str | Path, *, warn: bool = True) -> Path | None:
    """The newest sound checkpoint in ``folder`` (``step-<N>/`` whose files match the checksums
    in its ``meta.json``), or None; unfinished ``.tmp-`` folders are ignored, and a damaged newer
    one is passed over with a :class:`UserWarning` naming it and why.

        >>> latest_checkpoint("reports/gpt/train-w512/checkpoints")
        PosixPath('reports/gpt/train-w512/checkpoints/step-000300')
    """
    for path in checkpoints_newest_first(folder):
        why = damage(path)
        if why is None:
            return path
        if warn:
            warnings.warn(f"checkpoint {path} is damaged ({why}); falling back to an older one",
                          UserWarning, stacklevel=2)
    return None


def _barrier(collective: bool) -> None:
    if collective:
        import torch.distributed as dist

        dist.barrier()


@contextlib.contextmanager
def _single_process_is_meant():
    """DCP warns that it assumes one process whenever there is no process group: here that is
    what is meant (a run with parallel="none")."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is .*unavailable or uninitialized")
        yield


def _collective(parallel: str) -> bool:
    """Whether the ranks write and read a checkpoint together: under DDP or FSDP2. A process
    group that a run with parallel="none" happens to live in is not its business."""
    import torch.distributed as dist

    return parallel != "none" and dist.is_available() and dist.is_initialized()


def save_checkpoint(folder: str | Path, step: int, model, optimizer, loop_state: dict,
                    fingerprint: dict, parallel: str = "none") -> Path:
    """Write ``step-<step>/`` into ``folder`` atomically (module docstring), from every rank
    together under ``parallel`` "ddp" or "fsdp", and remove the older ones; returns its path."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    folder = Path(folder)
    collective = _collective(parallel)
    rank, world = rank_and_world() if collective else (0, 1)
    final = folder / f"step-{step:06d}"
    tmp = folder / f"{TMP_PREFIX}{final.name}"
    if rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(f"{TMP_PREFIX}*"):  # left by a crash mid-write
            shutil.rmtree(stale, ignore_errors=True)
    _barrier(collective)
    model_state, optim_state = get_state_dict(model, optimizer)
    with _single_process_is_meant():
        dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=tmp,
                 no_dist=not collective)
    if rank == 0:
        with open(tmp / LOOP, "wb") as f:
            torch.save(loop_state, f)
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        for file in files:  # DCP's shards and loop.pt reach the disk before the rename
            _fsync_file(file)
        meta = {"step": step, "world_size": world, "parallel": parallel,
                "torch": torch.__version__, "fingerprint": fingerprint,
                "sha256": {str(f.relative_to(tmp)): _sha256(f) for f in files}}
        _write_synced(tmp / META, json.dumps(meta, indent=1))
        _fsync_dir(tmp)
        if final.exists():  # an unfinished folder of that name (complete ones are refused earlier)
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(folder)
        _remove_older(folder, keep=KEEP)
    _barrier(collective)  # no rank goes on (or ends) before the checkpoint is complete
    return final


def _remove_older(folder: Path, keep: int) -> None:
    """Remove all but the newest ``keep`` sound checkpoints (damaged ones never count as kept)."""
    sound = 0
    for path in checkpoints_newest_first(folder):
        if sound >= keep:
            shutil.rmtree(path, ignore_errors=True)
        elif damage(path) is None:
            sound += 1


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_meta(path: str | Path) -> dict:
    """A checkpoint's ``meta.json``: step, world_size, parallel, torch, fingerprint."""
    return json.loads((Path(path) / META).read_text())


def check_fingerprint(path: str | Path, fingerprint: dict) -> None:
    """Refuse the checkpoint at ``path`` when its run's settings differ from ``fingerprint``,
    naming each difference."""
    diff = fingerprint_difference(read_meta(path).get("fingerprint", {}), fingerprint)
    if diff:
        raise ValueError(f"the checkpoint {path} was written by a run with other settings:\n  "
                         + "\n  ".join(diff) + "\nresume with the config and plan it was written "
                         "with, or start a new run without --resume (another --out, or remove "
                         f"{Path(path).parent})")


def load_checkpoint(path: str | Path, model, optimizer, fingerprint: dict,
                    parallel: str = "none") -> dict:
    """Load the checkpoint at ``path`` into ``model`` and ``optimizer`` (wrapped, sharded and
    on as many ranks as now, whatever they were when it was written) after checking its
    fingerprint; returns its loop state (``loop.pt``)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    path = Path(path)
    check_fingerprint(path, fingerprint)
    model_state, optim_state = get_state_dict(model, optimizer)
    metadata = dcp.FileSystemReader(path).read_metadata()
    _match_saved_optimizer_state(optim_state, metadata, model)
    state = {"model": model_state, "optim": optim_state}
    with _single_process_is_meant():
        dcp.load(state, checkpoint_id=path, no_dist=not _collective(parallel))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    return torch.load(path / LOOP, weights_only=True)


def _match_saved_optimizer_state(optim_state: dict, metadata, model) -> None:
    """Give ``optim_state`` (a fresh optimizer's, from ``get_state_dict``, whose state
    ``_init_optim_state`` made by one zero-lr step) exactly the tensors the checkpoint holds:
    DCP loads only what the destination has, and a step at lr 0 creates no state that only a
    real step creates (the spectral-decay vector ``spectral_v``, made when ``lr * wd > 0``);
    state the checkpoint lacks (a parameter that had no gradient yet) is dropped."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    saved = {}
    for key, path in metadata.planner_data.items():
        if len(path) == 4 and path[:2] == ("optim", "state"):
            saved[(path[2], path[3])] = metadata.state_dict_metadata[key]
    state = optim_state.get("state", {})
    for fqn in list(state):
        for key in list(state[fqn]):
            if (fqn, key) not in saved:
                del state[fqn][key]
        if not state[fqn]:
            del state[fqn]
    params = dict(model.named_parameters())
    for (fqn, key), meta in saved.items():
        if key in state.get(fqn, {}) or not isinstance(meta, TensorStorageMetadata):
            continue
        like = _param_of(fqn, params)
        empty = torch.empty(meta.size, dtype=meta.properties.dtype,
                            device=like.device if like is not None else "cpu")
        if like is not None and hasattr(like, "device_mesh"):  # FSDP2: a DTensor, read whole
            from torch.distributed.tensor import DTensor, Replicate

            empty = DTensor.from_local(empty, like.device_mesh, [Replicate()] * like.device_mesh.ndim,
                                       run_check=False)
        state.setdefault(fqn, {})[key] = empty


def _param_of(fqn: str, params: dict):
    from mutransfer.core import plan_name

    own = [n for n in params if plan_name(n, {fqn}) == fqn]
    return params[own[0]] if own else None

"""Token-id corpora: a prepared folder (``train.bin``, ``val.bin``, ``meta.json``) or loose
``.bin``/``.npy`` files, memory-mapped and checked at open.

The format every writer shares (``mutransfer data prepare``, nanoGPT's ``prepare.py``, llm.c):
flat little-endian token ids, ``uint16`` for vocabularies under 65536 else ``uint32``; a prepared
folder's ``meta.json`` holds at least ``vocab_size``, ``dtype``, ``train_tokens``, ``val_tokens``,
``max_id``, ``tokenizer``, ``sources`` (path -> sha256) and ``format`` (1).

    >>> ds = tokens("data/tokens")                   # a prepared folder
    >>> x, y = ds.batch("train", 8, 128, torch.Generator().manual_seed(0), "cpu")
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

TOKEN_DTYPES = ("uint16", "uint32")
SPLITS = ("train", "val")
META = "meta.json"
SIDECAR = ".meta.json"  # a loose file's cached scan: <file>.meta.json, keyed by size and mtime
SCAN_CHUNK = 1 << 24  # ids per vectorized max/min while scanning a file (16M: 32-64 MB)
FORMAT = 1


@dataclass(frozen=True, eq=False)
class TokenCorpus:
    """Memory-mapped train/val token ids (``np.memmap`` or an ``np.load(mmap_mode="r")`` array:
    never read whole) and the ``vocab`` the model embeds; built by :func:`tokens`.

    ``batch`` draws ``batch_size`` random windows of ``seq_len + 1`` ids from one split with the
    given generator, exactly as :class:`~mutransfer.training.data.ByteCorpus` draws its byte
    windows (so every trial and rank seeded alike reads the same global batch), and returns int64
    ``x = w[:, :-1]``, ``y = w[:, 1:]``. The loss is the mean next-token cross-entropy.

        >>> ds = tokens(train_file="train.bin", val_file="val.bin", dtype="uint16", vocab_size=300)
        >>> x, y = ds.batch("train", 4, 32, torch.Generator().manual_seed(0), "cpu")
    """

    name: str
    train: np.ndarray
    val: np.ndarray
    vocab: int
    max_id: int
    files: dict
    info: dict = field(default_factory=dict)

    def batch(self, split: str, batch_size: int, seq_len: int | None,
              generator: torch.Generator | None = None, device="cpu"):
        """Random windows ``(x, y)`` of shape ``(batch_size, seq_len)``, int64; deterministic
        given ``generator`` (a CPU ``torch.Generator``; None uses torch's global RNG)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
        if seq_len is None or isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len <= 0:
            raise ValueError(f"{self.name} is a token corpus and needs a positive int seq_len "
                             f"(e.g. seq_len=128); got {seq_len!r}")
        data = getattr(self, split)
        _check_window(self.files[split], len(data), seq_len)
        starts = torch.randint(0, len(data) - seq_len, (batch_size,), generator=generator)
        index = starts.numpy()[:, None] + np.arange(seq_len + 1)  # reads only these pages
        windows = torch.from_numpy(np.asarray(data[index], dtype=np.int64))
        return windows[:, :-1].to(device), windows[:, 1:].to(device)

    def loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy of logits ``(B, T, vocab)`` against ``y`` ``(B, T)``."""
        return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]).float(), y.reshape(-1))

    def describe(self) -> dict:
        """Files, dtype, vocab, token counts per split, the largest id, and a fingerprint
        (``sha256``: of meta.json's fields, max_id aside, for a folder, whose ``sources`` name the
        text's sha256s; of the two files' ids for loose files, with ``file_sha256`` per split)."""
        return {"name": self.name, "vocab": self.vocab, "dtype": str(self.train.dtype),
                "n_train": len(self.train), "n_val": len(self.val), "max_id": self.max_id,
                "train_file": self.files["train"], "val_file": self.files["val"], **self.info}


def tokens(path: str | os.PathLike | None = None, *, train_file: str | os.PathLike | None = None,
           val_file: str | os.PathLike | None = None, dtype: str | None = None,
           vocab_size: int | None = None, seq_len: int | None = None) -> TokenCorpus:
    """Open token ids for training: a prepared folder ``path`` (``train.bin``, ``val.bin``,
    ``meta.json`` from ``mutransfer data prepare``), or ``train_file``/``val_file`` (flat ``.bin``
    of ``dtype`` "uint16"/"uint32", or 1-D integer ``.npy``) with ``vocab_size``.

    Checked at open, before any training, each error naming the file and the fix: a file size
    that is no multiple of the dtype's, meta.json token counts that disagree with the files, an id
    ``>= vocab_size`` and (given ``seq_len``) a split shorter than one window of ``seq_len + 1``.
    The largest id comes from a chunked vectorized scan, done once: a folder stores it as
    ``max_id`` in its meta.json, a loose file in a sidecar ``<file>.meta.json`` (with the ids'
    sha256) keyed by the file's size and mtime; where neither can be written it is rescanned at
    each open. With a folder, ``vocab_size`` overrides meta.json's (a padded embedding, say).

        >>> ds = tokens("data/tokens")
        >>> ds.vocab, ds.describe()["n_train"]
    """
    if path is not None:
        if train_file is not None or val_file is not None:
            raise ValueError("give tokens(path) (a prepared folder) or train_file/val_file, not both")
        corpus = _open_folder(Path(path), dtype, vocab_size)
    else:
        if train_file is None or val_file is None:
            raise ValueError("tokens() needs path (a prepared folder with meta.json) or both "
                             "train_file and val_file (.bin with dtype, or .npy) with vocab_size")
        corpus = _open_files(Path(train_file), Path(val_file), dtype, vocab_size)
    if seq_len is not None:
        for split in SPLITS:
            _check_window(corpus.files[split], len(getattr(corpus, split)), seq_len)
    return corpus


def _check_window(file: str, n: int, seq_len: int) -> None:
    if n < seq_len + 1:
        raise ValueError(f"{file} holds {n} tokens, fewer than one window of seq_len + 1 = "
                         f"{seq_len + 1}; use [train] seq_len <= {max(n - 1, 0)} or more data")


def _open_folder(folder: Path, dtype: str | None, vocab_size: int | None) -> TokenCorpus:
    meta_file = folder / META
    if not meta_file.is_file():
        raise ValueError(f"{folder} has no {META}; make the folder with `mutransfer data prepare`, "
                         f"or give train_file/val_file with dtype and vocab_size instead of path")
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{meta_file} is not readable JSON ({err}); rebuild it with "
                         f"`mutransfer data prepare`") from None
    missing = [k for k in ("vocab_size", "dtype", "train_tokens", "val_tokens") if k not in meta]
    if missing:
        raise ValueError(f"{meta_file} lacks {', '.join(missing)}; rebuild the folder with "
                         f"`mutransfer data prepare`")
    if meta["dtype"] not in TOKEN_DTYPES:
        raise ValueError(f"{meta_file}: dtype {meta['dtype']!r} is not one of {', '.join(TOKEN_DTYPES)}; "
                         f"rebuild the folder with `mutransfer data prepare`")
    if dtype is not None and dtype != meta["dtype"]:
        raise ValueError(f"[data] dtype {dtype!r} disagrees with {meta_file}'s {meta['dtype']!r}; "
                         f"remove dtype from [data] (a prepared folder names its own)")
    arrays = {s: _open_bin(folder / f"{s}.bin", meta["dtype"]) for s in SPLITS}
    for split, array in arrays.items():
        if len(array) != meta[f"{split}_tokens"]:
            raise ValueError(f"{folder / f'{split}.bin'} holds {len(array)} {meta['dtype']} tokens but "
                             f"{meta_file} says {split}_tokens = {meta[f'{split}_tokens']}; the files "
                             f"changed after prepare: rebuild the folder with `mutransfer data prepare`")
    if "max_id" not in meta:  # scan once and keep it, so the next open is free
        meta["max_id"] = max(_scan(a)[0] for a in arrays.values())
        _write_json(meta_file, meta)
    vocab = int(vocab_size if vocab_size is not None else meta["vocab_size"])
    _check_vocab(str(meta_file), int(meta["max_id"]), vocab)
    stable = {k: v for k, v in meta.items() if k != "max_id"}
    info = {"path": str(folder.resolve()), "tokenizer": meta.get("tokenizer"),
            "sources": meta.get("sources", {}),
            "sha256": hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()}
    return TokenCorpus(f"tokens:{folder.resolve().name}", arrays["train"], arrays["val"], vocab,
                       int(meta["max_id"]), {s: str(folder / f"{s}.bin") for s in SPLITS}, info)


def _open_files(train: Path, val: Path, dtype: str | None, vocab_size: int | None) -> TokenCorpus:
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise ValueError(f"token files {train} and {val} need vocab_size = <ids the model embeds> "
                         f"(e.g. vocab_size = 50257); got {vocab_size!r}")
    arrays, scans = {}, {}
    for split, file in (("train", train), ("val", val)):
        if not file.is_file():
            raise FileNotFoundError(f"token file {file} not found (resolved: {file.resolve()}); "
                                    f"check [data] {split}_file")
        arrays[split] = _open_npy(file, dtype) if file.suffix == ".npy" else _open_bin(file, dtype)
        scans[split] = _cached_scan(file, arrays[split])
        _check_vocab(str(file), scans[split]["max_id"], vocab_size)
        if scans[split]["min_id"] < 0:
            raise ValueError(f"{file} holds a negative token id ({scans[split]['min_id']}); token ids "
                             f"run from 0 to vocab_size - 1: re-tokenize it")
    both = hashlib.sha256((scans["train"]["sha256"] + scans["val"]["sha256"]).encode()).hexdigest()
    info = {"sha256": both, "file_sha256": {s: scans[s]["sha256"] for s in SPLITS}}
    return TokenCorpus(f"tokens:{train.name}", arrays["train"], arrays["val"], vocab_size,
                       max(s["max_id"] for s in scans.values()), {"train": str(train), "val": str(val)},
                       info)


def _open_bin(file: Path, dtype: str | None) -> np.ndarray:
    if dtype not in TOKEN_DTYPES:
        raise ValueError(f"{file} is a flat .bin file: give dtype = \"uint16\" (vocabularies under "
                         f"65536) or \"uint32\"; got {dtype!r}")
    if not file.is_file():
        raise ValueError(f"{file} not found; a prepared folder holds train.bin and val.bin: rebuild "
                         f"it with `mutransfer data prepare`")
    itemsize, size = np.dtype(dtype).itemsize, file.stat().st_size
    if size % itemsize:
        other = "uint16" if dtype == "uint32" else "uint32"
        raise ValueError(f"{file} has {size} bytes, not a multiple of {dtype}'s {itemsize}: it was not "
                         f"written as {dtype}; use the dtype it was written with ({other}?)")
    if size == 0:  # np.memmap refuses an empty file
        raise ValueError(f"{file} is empty: no window of tokens fits; write token ids into it or "
                         f"rebuild the folder with `mutransfer data prepare`")
    return np.memmap(file, dtype=np.dtype(dtype).newbyteorder("<"), mode="r")


def _open_npy(file: Path, dtype: str | None) -> np.ndarray:
    try:
        array = np.load(file, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"{file} is not a readable .npy array ({err}); save it with "
                         f"np.save(path, ids) from a 1-D integer array") from None
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{file} holds a {array.ndim}-D {array.dtype} array; a token file is a 1-D "
                         f"integer array: save ids.reshape(-1).astype(np.uint16 or np.uint32)")
    if dtype is not None and np.dtype(dtype) != array.dtype:
        raise ValueError(f"[data] dtype {dtype!r} disagrees with {file}'s {array.dtype}; remove "
                         f"dtype (a .npy file names its own)")
    if len(array) == 0:
        raise ValueError(f"{file} is empty: no window of tokens fits; save the token ids into it")
    return array


def _check_vocab(file: str, max_id: int, vocab: int) -> None:
    if max_id >= vocab:
        raise ValueError(f"{file}: token id {max_id} >= vocab_size {vocab}, so the embedding has no "
                         f"row for it; set [data] vocab_size = {max_id + 1} or more (the tokenizer's vocabulary), "
                         f"or re-tokenize with the model's tokenizer")


def _scan(array: np.ndarray, digest=None) -> tuple[int, int]:
    """(max, min) of the ids, read in chunks of ``SCAN_CHUNK``; feeds ``digest`` the raw ids."""
    high, low = 0, 0
    for start in range(0, len(array), SCAN_CHUNK):
        chunk = np.asarray(array[start:start + SCAN_CHUNK])
        high, low = max(high, int(chunk.max())), min(low, int(chunk.min()))
        if digest is not None:
            digest.update(np.ascontiguousarray(chunk).view(np.uint8))
    return high, low


def _cached_scan(file: Path, array: np.ndarray) -> dict:
    """The file's max/min id and sha256, from ``<file>.meta.json`` when its size and mtime match,
    else scanned and stored there (rescanned at every open where it cannot be written)."""
    stat = file.stat()
    key = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "dtype": str(array.dtype),
           "format": FORMAT}
    sidecar = file.with_name(file.name + SIDECAR)
    try:
        cached = json.loads(sidecar.read_text())
        if all(cached.get(k) == v for k, v in key.items()):
            return cached
    except (OSError, ValueError):
        pass
    digest = hashlib.sha256()
    high, low = _scan(array, digest)
    found = {**key, "max_id": high, "min_id": low, "sha256": digest.hexdigest()}
    _write_json(sidecar, found)
    return found


def _write_json(file: Path, value: dict) -> None:
    """Write atomically (a temporary file renamed over it); a read-only folder is left as is."""
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(value, indent=2) + "\n")
        os.replace(tmp, file)
    except OSError:
        tmp.unlink(missing_ok=True)

"""``[data] source = "hf"``: a Hugging Face dataset tokenized once into a cached prepared folder.

``datasets.load_dataset(dataset, data_files=..., split=split)`` reads local json/jsonl, parquet,
csv or text files (or a dataset already in the Hugging Face cache); its ``text_field`` is
tokenized with ``datasets``' own ``.map(num_proc=...)`` into the format of
:mod:`~mutransfer.training._prepare` under ``cache_dir/<key>``. The key hashes the dataset's
identity (its files' paths and SHA-256s, or the cached dataset's fingerprint), the split, the
text field, the val fraction, the tokenizer (its JSON's SHA-256, or name and revision) and the
mutransfer, tokenizers and datasets versions. Every later trial, worker and rank reuses the folder;
a second process waits on a lock file (``fcntl.flock``) instead of tokenizing again, and the
folder appears whole: it is written under a temporary name and renamed.

Datasets load offline (``HF_DATASETS_OFFLINE``): mutransfer never downloads. Set
``HF_DATASETS_OFFLINE=0`` in the environment to let ``datasets`` fetch a hub dataset.

    >>> folder = hf_tokens("json", data_files="docs/*.jsonl", tokenizer="tokenizer.json")
    >>> json.loads((folder / "meta.json").read_text())["train_tokens"]
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

from mutransfer.training._prepare import (FORMAT, META, LoadedTokenizer, TokenWriter, check_not_empty,
                                          check_val_fraction, is_val, load_tokenizer, sha256_file,
                                          versions, write_meta)

DEFAULT_CACHE = "~/.cache/mutransfer/tokens"
# the datasets builder that reads each suffix (a local file or folder with no builder named)
BUILDERS = {".jsonl": "json", ".json": "json", ".ndjson": "json", ".parquet": "parquet",
            ".csv": "csv", ".tsv": "csv", ".arrow": "arrow"}
PACKAGED = ("json", "parquet", "csv", "text", "arrow")
DOCS_PER_PROC = 2000  # num_proc by default: one process per this many documents, up to the cores


def hf_tokens(dataset: str | None = None, *, data_files: str | list[str] | None = None,
              split: str = "train", text_field: str = "text", tokenizer: str | os.PathLike,
              val_fraction: float = 0.05, cache_dir: str | os.PathLike | None = None,
              num_proc: int | None = None) -> Path:
    """The prepared folder (train.bin, val.bin, meta.json) of a Hugging Face dataset's
    ``text_field`` tokenized by ``tokenizer``, made once under ``cache_dir`` and reused after.

    ``dataset``: a builder ("json", "parquet", "csv", "text"), a local file or folder, or a
    dataset name already in the Hugging Face cache; ``data_files``: a file, folder or glob (the
    builder follows the suffix when ``dataset`` is None). ``tokenizer``: a tokenizer.json path,
    or a transformers folder or cached name. ``num_proc``: tokenizing processes (default: one per
    2000 documents, at most the cores).

        >>> folder = hf_tokens(data_files="docs/*.jsonl", tokenizer="tokenizer.json")
        >>> ds = mutransfer.data.tokens(path=folder)
    """
    val_fraction = check_val_fraction(val_fraction)
    if dataset is None and data_files is None:
        raise ValueError("hf_tokens needs dataset= (a builder such as \"json\", a local folder, or a "
                         "name in the Hugging Face cache) or data_files= (e.g. \"docs/*.jsonl\")")
    tok = load_tokenizer(tokenizer)
    builder, files = local_files(dataset, data_files)
    loaded = None
    if files is not None:
        identity = {"builder": builder, "files": {str(f): sha256_file(f) for f in files}}
    else:
        loaded = load(dataset, None, split)
        identity = {"dataset": dataset, "fingerprint": loaded._fingerprint}
    key = cache_key(identity, split, text_field, val_fraction, tok)
    cache = Path(cache_dir if cache_dir is not None else DEFAULT_CACHE).expanduser()
    folder = cache / key
    if (folder / META).is_file():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / f"{key}.lock", folder):
        if (folder / META).is_file():  # another process made it while this one waited
            return folder
        for stale in [folder, *cache.glob(f".{key}.tmp-*")]:  # a crashed run's leftovers
            shutil.rmtree(stale, ignore_errors=True)
        tmp = cache / f".{key}.tmp-{os.getpid()}"
        tmp.mkdir()
        try:
            ds = loaded if loaded is not None else load(builder, files, split, cache_dir=tmp / "hf")
            where = ", ".join(map(str, files[:3])) + (", ..." if len(files) > 3 else "") if files else dataset
            counts = tokenize(ds, tmp, tok, text_field=text_field, val_fraction=val_fraction,
                              num_proc=num_proc, where=where, key=key)
            shutil.rmtree(tmp / "hf", ignore_errors=True)
            sources = identity["files"] if files is not None else {dataset: f"fingerprint:{identity['fingerprint']}"}
            write_meta(tmp, {"format": FORMAT, "vocab_size": tok.vocab_size, "eos_id": tok.eos_id,
                             "tokenizer": tok.identity, "sources": sources, "dataset": dataset,
                             "builder": builder, "split": split, "text_field": text_field,
                             "val_fraction": val_fraction, "key": key,
                             "versions": versions(*_extra(tok)), **counts})
            os.rename(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _extra(tok: LoadedTokenizer) -> list[str]:
    return ["transformers"] if tok.identity.get("kind") == "transformers" else []


def cache_key(identity: dict, split: str, text_field: str, val_fraction: float,
              tok: LoadedTokenizer) -> str:
    """The cache folder's name: a hash of everything that decides the tokens."""
    blob = json.dumps({"format": FORMAT, "data": identity, "split": split, "text_field": text_field,
                       "val_fraction": val_fraction, "tokenizer": tok.identity,
                       "versions": versions(*_extra(tok))}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def local_files(dataset: str | None, data_files) -> tuple[str | None, list[Path] | None]:
    """``(builder, files)`` when the data is on disk (files sorted and resolved), else
    ``(dataset, None)``: a name the Hugging Face cache must hold."""
    if data_files is not None:
        patterns = [data_files] if isinstance(data_files, (str, os.PathLike)) else list(data_files)
        files = sorted({f for p in patterns for f in _expand(str(p))})
        if not files:
            raise ValueError(f"no input files match data_files {', '.join(map(repr, map(str, patterns)))} "
                             f"(looked at {Path(str(patterns[0])).expanduser().resolve()}); check the path "
                             f"(relative to the config file) or the glob, e.g. \"docs/*.jsonl\"")
        if dataset is not None and dataset not in PACKAGED:
            raise ValueError(f"dataset {dataset!r} with data_files: name the builder that reads the "
                             f"files ({', '.join(PACKAGED)}) or leave dataset out to follow the suffix")
        return dataset or _builder(files), files
    path = Path(dataset).expanduser()
    if path.is_file() or path.is_dir():
        files = sorted(_expand(str(path)))
        if not files:
            raise ValueError(f"no input files in {str(path)!r}: a local dataset folder holds .jsonl, "
                             f".parquet, .csv or text files")
        return _builder(files), files
    return dataset, None


def _expand(pattern: str) -> list[Path]:
    path = Path(pattern).expanduser()
    if path.is_dir():
        return [p.resolve() for p in path.rglob("*") if p.is_file() and not any(
            part.startswith(".") for part in p.relative_to(path).parts)]
    return [Path(m).resolve() for m in glob.glob(os.path.expanduser(pattern), recursive=True)
            if Path(m).is_file()]


def _builder(files: list[Path]) -> str:
    found = {BUILDERS.get(f.suffix.lower(), "text") for f in files}
    if len(found) > 1:
        raise ValueError(f"the data files mix formats ({', '.join(sorted(found))}: {files[0]}, ...); "
                         f"give data_files one kind, e.g. \"docs/*.jsonl\"")
    return found.pop()


@contextlib.contextmanager
def offline():
    """``datasets`` (and the hub client) offline inside the block, unless the environment sets
    ``HF_DATASETS_OFFLINE`` or ``HF_HUB_OFFLINE`` to a false value itself."""
    import datasets

    said = [os.environ.get(k) for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")]
    if any(v is not None and v.strip().upper() in ("0", "FALSE", "NO", "OFF") for v in said):
        yield
        return
    saved = datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE, os.environ.get("HF_DATASETS_OFFLINE")
    datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = True
    os.environ["HF_DATASETS_OFFLINE"] = "1"  # worker processes of .map read it too
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE = saved[:2]
        if saved[2] is None:
            os.environ.pop("HF_DATASETS_OFFLINE", None)
        else:
            os.environ["HF_DATASETS_OFFLINE"] = saved[2]


def load(builder: str, files: list[Path] | None, split: str, cache_dir: Path | None = None):
    """``datasets.load_dataset`` offline: local ``files`` with ``builder`` (text files one
    document each), or the cached dataset ``builder`` when ``files`` is None."""
    try:
        import datasets
    except ImportError as exc:
        raise ValueError("[data] source = \"hf\" needs the datasets library: pip install -e \".[data]\"") from exc
    kwargs = {"sample_by": "document"} if builder == "text" else {}
    where = f"{files[0]}{', ...' if len(files) > 1 else ''}" if files else repr(builder)
    try:
        with offline():
            if files is None:
                return datasets.load_dataset(builder, split=split)
            return datasets.load_dataset(builder, data_files=[str(f) for f in files], split=split,
                                         cache_dir=str(cache_dir) if cache_dir else None, **kwargs)
    except ValueError as exc:
        if "split" in str(exc).lower():
            raise ValueError(f"{where}: no split {split!r} ({exc}); local files load as split "
                             f"\"train\": set [data] split = \"train\"") from exc
        raise ValueError(f"{where}: datasets could not read it ({exc})") from exc
    except (OSError, ConnectionError) as exc:
        if files is None:
            raise ValueError(
                f"dataset {builder!r} is neither a local file or folder nor in the Hugging Face cache, "
                f"and mutransfer loads datasets offline: download it once with `python -c \"import "
                f"datasets; datasets.load_dataset('{builder}', split='{split}')\"` (or "
                f"HF_DATASETS_OFFLINE=0), or point data_files at local files ({exc})") from exc
        raise ValueError(f"{where}: datasets could not read it ({exc})") from exc
    except Exception as exc:  # datasets' DatasetGenerationError on a malformed file
        raise ValueError(f"{where}: datasets could not read it ({type(exc).__name__}: {exc}); "
                         f"check the files' format") from exc


class Encode:
    """The batched function ``.map`` runs: ids (ending with the end-of-text id) and the split of
    each row. Picklable, so ``num_proc`` workers can run it."""

    def __init__(self, tok: LoadedTokenizer, text_field: str, val_fraction: float):
        self.tok, self.text_field, self.val_fraction = tok, text_field, val_fraction

    def __call__(self, batch: dict, indices: list[int]) -> dict:
        texts = [t or "" for t in batch[self.text_field]]
        eos = [self.tok.eos_id] if self.tok.eos_id is not None else []
        ids = [list(i) + eos if t else [] for t, i in zip(texts, self.tok.encode(texts))]
        return {"ids": ids, "val": [is_val(str(i), self.val_fraction) for i in indices]}


def tokenize(ds, folder: Path, tok: LoadedTokenizer, *, text_field: str, val_fraction: float,
             num_proc: int | None, where: str, key: str) -> dict:
    """Tokenize ``ds[text_field]`` with ``.map`` into ``folder``'s train.bin/val.bin; the counts."""
    columns = list(ds.column_names)
    if text_field not in columns:
        raise ValueError(f"{where}: no field {text_field!r} (its fields: {', '.join(map(repr, columns))}); "
                         f"set [data] text_field to the one holding the text")
    if len(ds) == 0:
        raise ValueError(f"empty corpus: {where} has no rows; check data_files and split")
    procs = num_proc or min(os.cpu_count() or 1, max(1, len(ds) // DOCS_PER_PROC))
    print(f"tokenizing {len(ds)} documents of {where} into {folder.parent} ({procs} processes)",
          file=sys.stderr)
    mapped = ds.map(Encode(tok, text_field, val_fraction), batched=True, with_indices=True,
                    num_proc=procs if procs > 1 else None, remove_columns=columns,
                    cache_file_name=str(folder / "hf" / "tokenized.arrow"), new_fingerprint=key,
                    desc="tokenizing")
    with TokenWriter(folder, tok.vocab_size) as writer:
        for batch in mapped.iter(batch_size=1024):
            for ids, val in zip(batch["ids"], batch["val"]):
                writer.add(ids, val)
        counts = writer.close(val_fraction)
    del mapped
    check_not_empty(counts, where, f"check that {text_field!r} holds text")
    return counts


@contextlib.contextmanager
def _locked(path: Path, folder: Path):
    """An exclusive ``fcntl.flock`` on ``path`` for the block; says so when it has to wait."""
    import fcntl

    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process preparing {folder} (lock {path})", file=sys.stderr)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)

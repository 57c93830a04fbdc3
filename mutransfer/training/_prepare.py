"""Text to token ids: the prepared-folder format that ``[data] source = "tokens"`` reads.

A prepared folder holds ``train.bin`` and ``val.bin`` (flat little-endian token ids: uint16 for
vocabularies under 65536, else uint32) and ``meta.json`` (``format``, ``vocab_size``, ``dtype``,
``train_tokens``, ``val_tokens``, ``max_id``, ``eos_id``, ``tokenizer``, ``sources``: path ->
sha256, and the library versions). Documents (a text file, a JSON line, a parquet row) go to
``val`` when the hash of their key (relative path, ``#index`` for records) falls below
``val_fraction``; each document ends with the tokenizer's end-of-text id when it has one.

:func:`prepare_tokens` does it for files on disk (``mutransfer data prepare``), and
:func:`train_tokenizer` trains a byte-level BPE on them, so a user with only text can start.

    >>> meta = prepare_tokens(["docs/"], "data/docs", train_tokenizer=4096)
    >>> meta["train_tokens"], meta["vocab_size"]
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from mutransfer._version import __version__

FORMAT = 1
META = "meta.json"
SPLIT_FILES = {"train": "train.bin", "val": "val.bin"}
EOS_TOKEN = "<|endoftext|>"
# end-of-text tokens looked up in a tokenizer.json, in this order
EOS_NAMES = (EOS_TOKEN, "</s>", "<eos>", "<|end_of_text|>", "<|eot_id|>")
JSONL_SUFFIXES = frozenset({".jsonl", ".json", ".ndjson"})
PARQUET_SUFFIXES = frozenset({".parquet"})
# the files a folder contributes (an explicitly named file of another suffix is read as text)
TEXT_SUFFIXES = frozenset({".txt", ".text", ".md", ".rst", ".tex", ".py", ".pyi", ".c", ".h",
                           ".cc", ".cpp", ".hpp", ".js", ".ts", ".java", ".go", ".rs", ".rb",
                           ".sh", ".html", ".css", ".toml", ".yaml", ".yml"})
SKIPPED_DIRS = frozenset({"__pycache__", ".git", ".hg", ".svn", "node_modules"})
MIN_BPE_VOCAB = 257  # 256 byte tokens and the end-of-text token
BATCH_DOCS = 512  # documents encoded per call (the tokenizer's Rust threads share them)
BATCH_CHARS = 4_000_000  # ... or fewer when they hold this much text
FLUSH_TOKENS = 1 << 20  # ids buffered per split before they go to disk


def check_val_fraction(value) -> float:
    """``value`` as a float in (0, 1), or a ValueError naming the fix."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError(f"val_fraction must lie in (0, 1), e.g. 0.05 (5% of the documents "
                         f"are held out); got {value!r}")
    return float(value)


def sha256_file(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_val(key: str, val_fraction: float) -> bool:
    """The stable split: the first 8 bytes of sha256(key) as a fraction of 2**64."""
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    return h / 2**64 < val_fraction


def dtype_for(vocab_size: int) -> str:
    """uint16 for vocabularies under 65536 ids, else uint32."""
    return "uint16" if vocab_size < 1 << 16 else "uint32"


def versions(*extra: str) -> dict:
    """The versions that decide the tokens: mutransfer, tokenizers, datasets (when installed)."""
    import importlib.metadata as md

    out = {"mutransfer": __version__}
    for name in ("tokenizers", "datasets", *extra):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


# ---- tokenizers ---------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class LoadedTokenizer:
    """A tokenizer behind one interface: ``encode(texts)`` -> lists of ids, with its vocabulary
    size, end-of-text id and identity (what a cache key hashes). Picklable (datasets' workers)."""

    backend: object  # a tokenizers.Tokenizer, or a transformers tokenizer
    vocab_size: int
    eos_id: int | None
    identity: dict = field(default_factory=dict)

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Ids of each text, without special tokens (a batch: the Rust threads share it)."""
        from tokenizers import Tokenizer

        if isinstance(self.backend, Tokenizer):
            return [e.ids for e in self.backend.encode_batch(list(texts), add_special_tokens=False)]
        return list(self.backend(list(texts), add_special_tokens=False)["input_ids"])

    def decode(self, ids) -> str:
        """The text of ``ids`` (special tokens skipped)."""
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=True)


def load_tokenizer(spec: str | os.PathLike) -> LoadedTokenizer:
    """A ``tokenizer.json`` file, a transformers folder, or a transformers name already in the
    Hugging Face cache (``local_files_only``: never a download).

        >>> tok = load_tokenizer("data/docs/tokenizer.json")
        >>> tok.encode(["hello world"])
    """
    if spec is None or not str(spec).strip():
        raise ValueError("no tokenizer given: pass a tokenizer.json path, a transformers folder or "
                         "name, or train one with --train-tokenizer N (e.g. 4096)")
    path = Path(spec).expanduser()
    if path.is_file():
        return _from_json(path)
    if path.is_dir() and not (path / "tokenizer_config.json").exists() and (path / "tokenizer.json").exists():
        return _from_json(path / "tokenizer.json")
    return _from_transformers(str(spec), path)


def _from_json(path: Path) -> LoadedTokenizer:
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on a bad file
        raise ValueError(f"tokenizer file {str(path)!r} is not a tokenizers JSON file ({exc}); give "
                         f"a tokenizer.json saved by `tokenizers` or transformers, a transformers "
                         f"folder, or train one with --train-tokenizer N") from exc
    eos = next((i for i in map(tok.token_to_id, EOS_NAMES) if i is not None), None)
    identity = {"kind": "tokenizer.json", "path": str(path.resolve()), "sha256": sha256_file(path)}
    return LoadedTokenizer(tok, tok.get_vocab_size(with_added_tokens=True), eos, identity)


def _from_transformers(spec: str, path: Path) -> LoadedTokenizer:
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise ValueError(f"tokenizer {spec!r} is not a file, so it needs transformers to load: "
                         f"pip install -e \".[hf]\", or give a tokenizer.json path") from exc
    try:
        tok = AutoTokenizer.from_pretrained(spec, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        where = "the folder holds no tokenizer transformers can read" if path.is_dir() else (
            "it is neither a file nor a folder, and not in the Hugging Face cache")
        raise ValueError(
            f"tokenizer {spec!r} cannot be loaded offline: {where}. mutransfer never downloads: "
            f"fetch it once with `huggingface-cli download {spec}` (or `python -c \"from transformers "
            f"import AutoTokenizer; AutoTokenizer.from_pretrained('{spec}')\"`) and rerun, or give "
            f"a tokenizer.json path, or train one with --train-tokenizer N") from exc
    backend = getattr(tok, "backend_tokenizer", None)
    serialized = backend.to_str() if backend is not None else json.dumps(tok.get_vocab(), sort_keys=True)
    identity = {"kind": "transformers", "name": spec,
                "path": str(path.resolve()) if path.is_dir() else None,
                "revision": getattr(tok, "_commit_hash", None) or tok.init_kwargs.get("_commit_hash"),
                "sha256": hashlib.sha256(serialized.encode()).hexdigest()}
    return LoadedTokenizer(tok, len(tok), tok.eos_token_id, identity)


# ---- input files and their documents ------------------------------------------------------------

def find_inputs(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """The files ``inputs`` name: files as given, folders walked for text, .jsonl and .parquet
    files (hidden and cache folders skipped), globs expanded (``**`` recursive). Sorted, unique.

        >>> find_inputs(["docs/", "notes/*.md"])
        [PosixPath('docs/a.txt'), PosixPath('notes/b.md')]
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    found, missing = [], []
    for item in map(str, inputs):
        path = Path(item).expanduser()
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found += _walk(path)
        elif glob.has_magic(item):
            matches = [Path(m) for m in glob.glob(os.path.expanduser(item), recursive=True)]
            found += [p for m in matches for p in ([m] if m.is_file() else _walk(m))]
        else:
            missing.append(item)
    if missing:
        raise ValueError(f"input {missing[0]!r} is not a file, a folder or a glob that matches "
                         f"(looked at {Path(missing[0]).expanduser().resolve()}); check the path")
    files = sorted({p.resolve() for p in found})
    if not files:
        raise ValueError(f"no input files match {', '.join(map(repr, map(str, inputs)))}: give text "
                         f"files ({', '.join(sorted(TEXT_SUFFIXES)[:6])}, ...), .jsonl or .parquet "
                         f"files, folders holding them, or globs such as 'docs/**/*.txt'")
    return files


def _walk(root: Path) -> list[Path]:
    known = TEXT_SUFFIXES | JSONL_SUFFIXES | PARQUET_SUFFIXES
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIPPED_DIRS and not d.startswith(".")]
        out += [Path(dirpath) / f for f in filenames
                if Path(f).suffix.lower() in known and not f.startswith(".")]
    return out


def relative_names(files: list[Path]) -> dict[Path, str]:
    """Each file's path relative to the files' common folder (the key of its documents' split)."""
    root = Path(os.path.commonpath([str(f.parent) for f in files]))
    return {f: f.relative_to(root).as_posix() for f in files}


def iter_documents(files: list[Path], text_field: str = "text") -> Iterator[tuple[str, str, int]]:
    """``(key, text, bytes read)`` for every document: a text file whole, a JSON line's
    ``text_field``, a parquet row's ``text_field`` column. Empty documents are skipped.

        >>> for key, text, _ in iter_documents(find_inputs(["docs/"])):
        ...     print(key, len(text))
    """
    names = relative_names(files)
    for path in files:
        suffix = path.suffix.lower()
        if suffix in JSONL_SUFFIXES:
            yield from _jsonl_documents(path, names[path], text_field)
        elif suffix in PARQUET_SUFFIXES:
            yield from _parquet_documents(path, names[path], text_field)
        else:
            text = path.read_bytes().decode("utf-8", errors="replace")
            if text:
                yield names[path], text, path.stat().st_size


def _jsonl_documents(path: Path, name: str, text_field: str):
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: line {number} is not JSON ({exc.msg}); a .jsonl file holds "
                                 f"one JSON object per line, e.g. {{\"{text_field}\": \"...\"}}") from exc
            text = _field(record, path, f"line {number}", text_field)
            if text:
                yield name + f"#{number}", text, len(line)


def _field(record, path: Path, where: str, text_field: str) -> str:
    if not isinstance(record, dict) or text_field not in record:
        fields = ", ".join(map(repr, record)) if isinstance(record, dict) else "none: not an object"
        raise ValueError(f"{path}: {where} has no field {text_field!r} (its fields: {fields}); pass "
                         f"the one holding the text, e.g. --text-field NAME (or [data] text_field)")
    value = record[text_field]
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{path}: {where}: field {text_field!r} holds a {type(value).__name__}, not "
                         f"text; pass the field that holds the text with --text-field NAME")
    return value


def _parquet_documents(path: Path, name: str, text_field: str):
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ValueError(f"{path}: reading .parquet needs pyarrow: pip install -e \".[data]\" "
                         f"(datasets brings it)") from exc
    reader = pq.ParquetFile(path)
    columns = reader.schema_arrow.names
    if text_field not in columns:
        raise ValueError(f"{path}: no column {text_field!r} (its columns: {', '.join(map(repr, columns))}); "
                         f"pass the one holding the text, e.g. --text-field NAME (or [data] text_field)")
    rows, size, index = max(reader.metadata.num_rows, 1), path.stat().st_size, 0
    for batch in reader.iter_batches(columns=[text_field], batch_size=1024):
        for value in batch.column(0).to_pylist():
            index += 1
            text = _field({text_field: value}, path, f"row {index}", text_field)
            if text:
                yield name + f"#{index}", text, size // rows


# ---- writing ids ---------------------------------------------------------------------------------

class TokenWriter:
    """Appends documents' ids to ``train.bin``/``val.bin`` in a folder, in chunks of
    ``FLUSH_TOKENS`` (never the whole corpus in memory); :meth:`close` returns the counts.

        >>> with TokenWriter("out", vocab_size=50257) as w:
        ...     w.add([464, 3290], val=False)
    """

    def __init__(self, folder: str | os.PathLike, vocab_size: int):
        self.folder, self.vocab_size = Path(folder), int(vocab_size)
        self.dtype = np.dtype(dtype_for(self.vocab_size)).newbyteorder("<")
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / META).unlink(missing_ok=True)  # the folder is incomplete until close
        self.files = {s: open(self._partial(s), "wb") for s in SPLIT_FILES}
        self.buffers = {s: [] for s in SPLIT_FILES}
        self.buffered = {s: 0 for s in SPLIT_FILES}
        self.counts = {s: 0 for s in SPLIT_FILES}
        self.documents = {s: 0 for s in SPLIT_FILES}
        self.max_id = -1

    def _partial(self, split: str) -> Path:
        return self.folder / (SPLIT_FILES[split] + ".partial")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for fh in self.files.values():
            fh.close()

    def add(self, ids, val: bool) -> None:
        """One document's ids, to ``val.bin`` when ``val`` else ``train.bin``."""
        split = "val" if val else "train"
        if len(ids) == 0:
            return
        self.buffers[split].append(np.asarray(ids, dtype=np.int64))
        self.buffered[split] += len(ids)
        self.documents[split] += 1
        if self.buffered[split] >= FLUSH_TOKENS:
            self._flush(split)

    def _flush(self, split: str) -> None:
        if not self.buffers[split]:
            return
        chunk = np.concatenate(self.buffers[split])
        top = int(chunk.max())
        if top >= np.iinfo(self.dtype).max + 1 or chunk.min() < 0:
            raise ValueError(f"the tokenizer produced id {top}, outside {self.dtype.name} for its "
                             f"vocabulary of {self.vocab_size}; the tokenizer's vocab size is wrong")
        self.max_id = max(self.max_id, top)
        chunk.astype(self.dtype).tofile(self.files[split])
        self.counts[split] += len(chunk)
        self.buffers[split], self.buffered[split] = [], 0

    def close(self, val_fraction: float) -> dict:
        """Flush, give ``val`` the tail of ``train`` when no document hashed into it (or the other
        way round), move the files into place; returns the counts for meta.json."""
        for split in SPLIT_FILES:
            self._flush(split)
            self.files[split].close()
        split_by = "documents"
        if self.counts["train"] == 0 and self.counts["val"] > 0:  # every document hashed into val
            os.replace(self._partial("val"), self._partial("train"))
            open(self._partial("val"), "wb").close()
            self.counts = {"train": self.counts["val"], "val": 0}
            self.documents = {"train": self.documents["val"], "val": 0}
        if self.counts["val"] == 0 and self.counts["train"] >= 2:
            self._move_tail(max(1, int(self.counts["train"] * val_fraction)))
            split_by = "tail"
        for split, name in SPLIT_FILES.items():
            os.replace(self._partial(split), self.folder / name)
        return {"train_tokens": self.counts["train"], "val_tokens": self.counts["val"],
                "max_id": self.max_id, "dtype": self.dtype.name, "split_by": split_by,
                "documents": dict(self.documents)}

    def _move_tail(self, n: int) -> None:
        train = np.memmap(self._partial("train"), dtype=self.dtype, mode="r")
        keep = len(train) - n
        with open(self._partial("val"), "wb") as fh:
            for start in range(keep, len(train), FLUSH_TOKENS):
                np.asarray(train[start:min(start + FLUSH_TOKENS, len(train))]).tofile(fh)
        del train
        os.truncate(self._partial("train"), keep * self.dtype.itemsize)
        self.counts = {"train": keep, "val": n}


def write_meta(folder: str | os.PathLike, meta: dict) -> Path:
    """``meta.json`` written atomically (a temp file renamed), last: a folder with it is complete."""
    path = Path(folder) / META
    tmp = path.with_suffix(".json.partial")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def check_not_empty(counts: dict, what: str, fix: str) -> None:
    """A ValueError when the corpus gave fewer than 2 tokens (no window can be drawn)."""
    if counts["train_tokens"] + counts["val_tokens"] < 2:
        raise ValueError(f"empty corpus: {what} gave {counts['train_tokens'] + counts['val_tokens']} "
                         f"tokens; {fix}")


# ---- the two public entry points ------------------------------------------------------------------

def train_tokenizer(inputs, vocab_size: int, path: str | os.PathLike, *, text_field: str = "text",
                    progress: bool = True) -> Path:
    """Train a byte-level BPE of ``vocab_size`` tokens (``<|endoftext|>`` included) with
    ``tokenizers`` on the documents of ``inputs`` (files, folders, globs) and save it as JSON.
    Byte-level: every text encodes, and decoding gives it back exactly.

        >>> path = train_tokenizer(["docs/"], 4096, "data/docs/tokenizer.json")
        >>> tokenizers.Tokenizer.from_file(str(path)).get_vocab_size()
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or not MIN_BPE_VOCAB <= vocab_size < 1 << 32:
        raise ValueError(f"a byte-level BPE needs at least {MIN_BPE_VOCAB} tokens (256 bytes and "
                         f"{EOS_TOKEN}); got {vocab_size!r}: use e.g. --train-tokenizer 4096")
    files = find_inputs(inputs)
    seen = {"documents": 0}

    def texts():
        for _, text, _ in iter_documents(files, text_field):
            seen["documents"] += 1
            yield text

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS_TOKEN],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=progress)
    tok.train_from_iterator(texts(), trainer)
    if seen["documents"] == 0:
        raise ValueError(f"empty corpus: the {len(files)} input files ({files[0]}, ...) hold no "
                         f"text{_field_hint(files, text_field)}; nothing to train a tokenizer on")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(out))
    return out


def _field_hint(files: list[Path], text_field: str) -> str:
    records = any(f.suffix.lower() in JSONL_SUFFIXES | PARQUET_SUFFIXES for f in files)
    return f" in field {text_field!r}" if records else ""


def prepare_tokens(inputs, out: str | os.PathLike, tokenizer: str | os.PathLike | None = None, *,
                   train_tokenizer: int | None = None, text_field: str = "text",
                   val_fraction: float = 0.05, progress: bool = True) -> dict:
    """Tokenize ``inputs`` (text files, .jsonl or .parquet: files, folders or globs) into the
    prepared folder ``out`` (``train.bin``, ``val.bin``, ``meta.json``); returns the meta.

    ``tokenizer``: a tokenizer.json, or a transformers folder or name in the Hugging Face cache
    (never downloaded); or ``train_tokenizer=N`` trains a byte-level BPE of N tokens on the
    inputs first and saves it as ``out/tokenizer.json``. Documents are encoded in batches that
    the tokenizer's threads share, and written in chunks, so memory stays flat.

        >>> meta = prepare_tokens(["docs/"], "data/docs", train_tokenizer=4096)
        >>> np.fromfile("data/docs/train.bin", dtype=meta["dtype"])[:10]
    """
    val_fraction = check_val_fraction(val_fraction)
    if (tokenizer is None) == (train_tokenizer is None):
        raise ValueError("give a tokenizer (--tokenizer: a tokenizer.json, or a transformers folder "
                         "or name) or --train-tokenizer N to train one on the inputs; exactly one")
    files = find_inputs(inputs)
    out = Path(out)
    if train_tokenizer is not None:
        tokenizer = _train_into(files, train_tokenizer, out, text_field, progress)
    tok = load_tokenizer(tokenizer)
    with TokenWriter(out, tok.vocab_size) as writer:
        _encode_files(files, tok, writer, text_field, val_fraction, progress)
        counts = writer.close(val_fraction)
    check_not_empty(counts, f"the {len(files)} input files ({files[0]}, ...)",
                    f"check that they hold text{_field_hint(files, text_field)}")
    meta = {"format": FORMAT, "vocab_size": tok.vocab_size, "eos_id": tok.eos_id,
            "tokenizer": tok.identity, "sources": {str(f): sha256_file(f) for f in files},
            "text_field": text_field, "val_fraction": val_fraction,
            "versions": versions(*(["transformers"] if tok.identity["kind"] == "transformers" else [])),
            **counts}
    write_meta(out, meta)
    return meta


def _train_into(files: list[Path], vocab_size: int, out: Path, text_field: str, progress: bool) -> Path:
    if progress:
        print(f"training a byte-level BPE of {vocab_size} tokens on {len(files)} files", file=sys.stderr)
    return train_tokenizer(files, vocab_size, out / "tokenizer.json", text_field=text_field, progress=progress)


def _encode_files(files, tok: LoadedTokenizer, writer: TokenWriter, text_field: str,
                  val_fraction: float, progress: bool) -> None:
    from tqdm.auto import tqdm

    eos = [tok.eos_id] if tok.eos_id is not None else []
    total = sum(f.stat().st_size for f in files)
    with tqdm(total=total, unit="B", unit_scale=True, desc="tokenizing", disable=not progress) as bar:
        for batch in _batches(iter_documents(files, text_field)):
            keys, texts, sizes = zip(*batch)
            for key, ids in zip(keys, tok.encode(texts)):
                writer.add(list(ids) + eos, is_val(key, val_fraction))
            bar.update(min(sum(sizes), total - bar.n))
        bar.update(total - bar.n)


def _batches(documents: Iterator[tuple[str, str, int]]) -> Iterator[list]:
    batch, chars = [], 0
    for doc in documents:
        batch.append(doc)
        chars += len(doc[1])
        if len(batch) >= BATCH_DOCS or chars >= BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch

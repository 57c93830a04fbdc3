"""Datasets: Python's own stdlib sources, any text file, token-id files, a synthetic
teacher-network task, or your own (``[data] factory``).

**The dataset protocol** (the one place it is written down): :func:`mutransfer.train`, every trial
and ``[data] factory = "module:function"`` or ``"path/to/file.py:function"`` (called with no
arguments) use any object with these three methods:

    x, y = ds.batch(split, batch_size, seq_len, generator, device)   # split "train" | "val"
    loss = ds.loss(outputs, y)     # scalar: cross-entropy (tokens, bytes, classes) or MSE
    ds.describe()                  # dict: name, sizes, sha256, ... (written into the reports)

``batch`` must draw its randomness from ``generator`` only (a CPU ``torch.Generator`` seeded per
trial: every rank then reads the same global batch and trials stay comparable) and return
tensors on ``device``; an optional ``vocab`` attribute reaches the model factory as ``vocab=``.
A factory returning an object without one of the methods is a TypeError naming it. A custom
dataset, in ``my_data.py`` with ``[data] factory = "my_data.py:make_dataset"``:

    import numpy as np, torch, torch.nn.functional as F

    class MyTokens:
        vocab = 50257                                    # the model factory gets vocab=50257

        def __init__(self, train, val):                  # 1-D arrays of token ids
            self.splits = {"train": train, "val": val}

        def batch(self, split, batch_size, seq_len, generator=None, device="cpu"):
            data = self.splits[split]
            starts = torch.randint(0, len(data) - seq_len, (batch_size,), generator=generator)
            w = torch.from_numpy(np.stack([data[s:s + seq_len + 1] for s in starts.tolist()])).long()
            return w[:, :-1].to(device), w[:, 1:].to(device)

        def loss(self, outputs, y):                      # logits (B, T, vocab), targets (B, T)
            return F.cross_entropy(outputs.flatten(0, 1).float(), y.flatten())

        def describe(self):
            return {"name": "my-tokens", "n_train": len(self.splits["train"])}

    def make_dataset():
        ids = np.load("ids.npy", mmap_mode="r")
        cut = int(0.95 * len(ids))
        return MyTokens(ids[:cut], ids[cut:])

Byte corpora (:func:`pycorpus`, :func:`textfile`) return windows of ``seq_len + 1`` bytes as
``x = w[:-1], y = w[1:]`` (next-byte prediction, vocab 256); token corpora (:func:`tokens`) do the
same over memory-mapped token ids; synthetic tasks return ``(inputs, targets)`` and ignore
``seq_len``.

    >>> ds = pycorpus()
    >>> x, y = ds.batch("train", 8, 64, torch.Generator().manual_seed(0), "cpu")
"""
from __future__ import annotations

import functools
import hashlib
import os
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from mutransfer.training._data_factory import PROTOCOL, check_protocol, from_factory  # noqa: F401
# text to token ids (`mutransfer data prepare`), and Hugging Face datasets tokenized once into a cache
from mutransfer.training._hf import hf_tokens  # noqa: F401
from mutransfer.training._prepare import prepare_tokens, train_tokenizer  # noqa: F401
from mutransfer.training._tokens import TOKEN_DTYPES, TokenCorpus, tokens  # noqa: F401

SPLITS = ("train", "val")
SYNTHETIC_KINDS = ("classification", "regression", "image")
VOCAB = 256
# pycorpus: a file goes to "val" when the hash of its relative path falls below this fraction
PYCORPUS_VAL_FRACTION = 0.05
# textfile: the last this fraction of the bytes is "val"
TEXTFILE_VAL_FRACTION = 0.10
# directories never read by pycorpus: installed packages and the stdlib's own test suites
# (test/, tests/, idlelib/idle_test, lib2to3/tests, ...), which are mostly generated fixtures
EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test",
                           "__pycache__"})
# synthetic: hidden width of the fixed random teacher, and examples per split
TEACHER_HIDDEN = 64
SYNTHETIC_SIZES = {"train": 8192, "val": 2048}


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    return split


def _check_positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int; got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer; got {value!r}. Use e.g. {name}=64")
    return value


@dataclass(frozen=True, eq=False)
class ByteCorpus:
    """A byte-level language-modelling corpus: uint8 train/val tensors, vocab 256.

    ``batch`` draws ``batch_size`` random windows of ``seq_len + 1`` bytes from one split;
    ``x = w[:, :-1]``, ``y = w[:, 1:]`` (int64). The loss is the mean next-byte cross-entropy.

        >>> ds = textfile("README.md")
        >>> x, y = ds.batch("train", 4, 32, torch.Generator().manual_seed(0), "cpu")
    """

    name: str
    train: torch.Tensor
    val: torch.Tensor
    sha256: str
    info: dict = field(default_factory=dict)
    vocab: int = VOCAB

    def batch(self, split: str, batch_size: int, seq_len: int | None,
              generator: torch.Generator | None = None, device="cpu"):
        """Random windows ``(x, y)`` of shape ``(batch_size, seq_len)``; deterministic given
        ``generator`` (a CPU ``torch.Generator``; None uses torch's global RNG)."""
        data = getattr(self, _check_split(split))
        _check_positive("batch_size", batch_size)
        if seq_len is None:
            raise ValueError(f"{self.name} is a byte corpus and needs seq_len (e.g. seq_len=64)")
        _check_positive("seq_len", seq_len)
        if len(data) < seq_len + 1:
            raise ValueError(
                f"the {split} split of {self.name} has {len(data)} bytes, fewer than one window of "
                f"seq_len + 1 = {seq_len + 1}; use seq_len <= {max(len(data) - 1, 0)} or a bigger corpus")
        starts = torch.randint(0, len(data) - seq_len, (batch_size,), generator=generator)
        windows = data[starts[:, None] + torch.arange(seq_len + 1)].long()
        return windows[:, :-1].to(device), windows[:, 1:].to(device)

    def loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean next-byte cross-entropy of logits ``(B, T, 256)`` against ``y`` ``(B, T)``."""
        return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]).float(), y.reshape(-1))

    def describe(self) -> dict:
        """Name, sizes (bytes per split), SHA-256 of the whole corpus, and source details."""
        return {"name": self.name, "n_bytes": len(self.train) + len(self.val),
                "n_train": len(self.train), "n_val": len(self.val), "sha256": self.sha256,
                "vocab": self.vocab, **self.info}


def _tensor(chunks: list[bytes]) -> torch.Tensor:
    joined = bytearray(b"".join(chunks))
    return torch.frombuffer(joined, dtype=torch.uint8) if joined else torch.zeros(0, dtype=torch.uint8)


def _is_val(relpath: str) -> bool:
    """The stable per-file split: the first 8 bytes of sha256(path) as a fraction of 2**64."""
    h = int.from_bytes(hashlib.sha256(relpath.encode()).digest()[:8], "big")
    return h / 2**64 < PYCORPUS_VAL_FRACTION


def _python_files(root: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in EXCLUDED_DIRS]  # prune: do not descend
        found += [Path(dirpath) / f for f in filenames if f.endswith(".py")]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def stdlib_files(root: str | os.PathLike | None = None) -> list[Path]:
    """The standard-library ``.py`` files :func:`pycorpus` reads (sorted, tests and installed
    packages left out), e.g. to tokenize them: ``mutransfer data prepare --stdlib``.

        >>> files = stdlib_files()
        >>> files[0].suffix
        '.py'
    """
    return _python_files(Path(root or sysconfig.get_paths()["stdlib"]))


def pycorpus(root: str | os.PathLike | None = None) -> ByteCorpus:
    """The bytes of the running Python's standard-library ``.py`` files (no download).

    Files are read in sorted relative-path order, skipping ``site-packages``,
    ``dist-packages`` and test directories (``test``, ``tests``, ``idlelib/idle_test``, ...).
    A file goes to ``val`` when ``sha256(relative path)`` falls in the lowest
    ``PYCORPUS_VAL_FRACTION`` (5%) of hash values, so the split is stable and not random.
    ``describe()`` reports ``n_bytes`` and the SHA-256 of all files concatenated: the corpus
    **differs between Python versions** (3.11's stdlib is ~12 MB), so compare losses only
    between runs whose sha256 agrees. Loaded once per process and root (cached).

    Args:
        root: the directory to read; default ``sysconfig.get_paths()["stdlib"]``.

        >>> ds = pycorpus()
        >>> ds.describe()["n_bytes"] > 1_000_000
        True
    """
    root = Path(root if root is not None else sysconfig.get_paths()["stdlib"]).resolve()
    return _load_pycorpus(str(root))


@functools.lru_cache(maxsize=4)
def _load_pycorpus(root: str) -> ByteCorpus:
    base = Path(root)
    if not base.is_dir():
        raise ValueError(f"pycorpus root {root!r} is not a directory; pass root=None for the stdlib")
    files = _python_files(base)
    if not files:
        raise ValueError(f"pycorpus found no .py files under {root!r} (outside test and package "
                         f"directories); pass root=None for the stdlib or use textfile(path)")
    train, val, digest = [], [], hashlib.sha256()
    for path in files:
        content = path.read_bytes()
        digest.update(content)
        (val if _is_val(path.relative_to(base).as_posix()) else train).append(content)
    n_val_files = len(val)
    info = {"root": root, "n_files": len(files), "n_val_files": n_val_files,
            "python": ".".join(map(str, sys.version_info[:3]))}
    return ByteCorpus("pycorpus", _tensor(train), _tensor(val), digest.hexdigest(), info)


def textfile(path: str | os.PathLike) -> ByteCorpus:
    """Any file read as bytes; the first 90% is ``train``, the last 10% ``val`` (contiguous
    ranges, so no window straddles the two).

    Args:
        path: the file to read.

        >>> ds = textfile("README.md")
        >>> ds.describe()["sha256"]
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"text file {str(path)!r} not found (resolved: {file.resolve()}); "
                                f"check the path, or use pycorpus() for a built-in corpus")
    content = file.read_bytes()
    if len(content) < 2:
        raise ValueError(f"text file {str(path)!r} has {len(content)} bytes; a corpus needs at least "
                         f"one window of seq_len + 1 bytes in each split: use a bigger file")
    cut = len(content) - max(1, int(len(content) * TEXTFILE_VAL_FRACTION))
    return ByteCorpus(f"textfile:{file.name}", _tensor([content[:cut]]), _tensor([content[cut:]]),
                      hashlib.sha256(content).hexdigest(), {"path": str(file.resolve())})


@dataclass(frozen=True, eq=False)
class SyntheticTask:
    """A teacher-network task: ``inputs ~ N(0, I)``, targets from a fixed random 2-layer teacher
    ``W2 tanh(W1 x)``. Fixed train/val example pools; ``batch`` samples from them.

    classification/image: label = argmax of the teacher's logits (cross-entropy loss), replaced by
    a uniform random class with probability ``noise``. regression: target = teacher output plus
    Gaussian noise of std ``noise`` (MSE loss). image: inputs shaped ``(C, S, S)`` for CNNs.

        >>> ds = synthetic("regression", in_dim=16, out_dim=1, seed=0)
        >>> x, y = ds.batch("train", 32, None, torch.Generator().manual_seed(0), "cpu")
    """

    kind: str
    in_dim: int
    out_dim: int
    seed: int
    noise: float
    inputs: dict
    targets: dict
    input_shape: tuple[int, ...]

    def batch(self, split: str, batch_size: int, seq_len: int | None = None,
              generator: torch.Generator | None = None, device="cpu"):
        """``batch_size`` examples sampled with replacement; ``seq_len`` is ignored."""
        pool = self.inputs[_check_split(split)]
        _check_positive("batch_size", batch_size)
        idx = torch.randint(0, len(pool), (batch_size,), generator=generator)
        x = pool[idx].reshape(batch_size, *self.input_shape)
        return x.to(device), self.targets[split][idx].to(device)

    def loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy (classification, image) or mean squared error (regression)."""
        if self.kind == "regression":
            return F.mse_loss(outputs.float(), y)
        return F.cross_entropy(outputs.float(), y)

    def describe(self) -> dict:
        """Kind, dims, seed, noise and the number of examples per split."""
        return {"name": f"synthetic:{self.kind}", "kind": self.kind, "in_dim": self.in_dim,
                "out_dim": self.out_dim, "seed": self.seed, "noise": self.noise,
                "size": {s: len(v) for s, v in self.inputs.items()},
                "input_shape": self.input_shape}


def synthetic(kind: str = "classification", in_dim: int = 32, out_dim: int = 10, seed: int = 0, *,
              noise: float | None = None, in_channels: int = 3, image_size: int = 8) -> SyntheticTask:
    """A fixed random teacher ``f(x) = W2 tanh(W1 x)`` (``W1``: 64 x in_dim, entries N(0, 1/in_dim);
    ``W2``: out_dim x 64, N(0, 1/64)) labelling Gaussian inputs; 8192 train, 2048 val examples.

    Args:
        kind: "classification" (labels argmax f(x), cross-entropy), "regression" (targets
            f(x) + noise, MSE) or "image" (classification on ``(in_channels, image_size,
            image_size)`` inputs for :func:`mutransfer.zoo.cnn`; ``in_dim`` is then
            ``in_channels * image_size**2``).
        noise: label-flip probability (classification, image; default 0) or Gaussian target
            noise std (regression; default 0.1).
        seed: the task's own seed (teacher and examples); independent of training seeds.

        >>> ds = synthetic("classification", in_dim=32, out_dim=10)
        >>> ds.describe()["size"]
    """
    if kind not in SYNTHETIC_KINDS:
        raise ValueError(f"unknown synthetic kind {kind!r}; use one of {', '.join(SYNTHETIC_KINDS)}")
    if kind == "image":
        in_dim = _check_positive("in_channels", in_channels) * _check_positive("image_size", image_size) ** 2
    _check_positive("in_dim", in_dim)
    _check_positive("out_dim", out_dim)
    if kind != "regression" and out_dim < 2:
        raise ValueError(f"{kind} needs out_dim >= 2 classes; got {out_dim}")
    noise = (0.1 if kind == "regression" else 0.0) if noise is None else float(noise)
    if noise < 0 or (kind != "regression" and noise > 1):
        raise ValueError(f"noise must be in [0, 1] (a label-flip probability) for {kind}, or >= 0 "
                         f"(a target std) for regression; got {noise!r}")
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(TEACHER_HIDDEN, in_dim, generator=g) / in_dim**0.5
    w2 = torch.randn(out_dim, TEACHER_HIDDEN, generator=g) / TEACHER_HIDDEN**0.5
    inputs, targets = {}, {}
    for split, n in SYNTHETIC_SIZES.items():
        x = torch.randn(n, in_dim, generator=g)
        f = torch.tanh(x @ w1.T) @ w2.T
        inputs[split], targets[split] = x, _targets(kind, f, noise, g)
    shape = (in_channels, image_size, image_size) if kind == "image" else (in_dim,)
    return SyntheticTask(kind, in_dim, out_dim, seed, noise, inputs, targets, shape)


def _targets(kind: str, f: torch.Tensor, noise: float, g: torch.Generator) -> torch.Tensor:
    if kind == "regression":
        return f + noise * torch.randn(f.shape, generator=g)
    labels = f.argmax(dim=1)
    flip = torch.rand(len(f), generator=g) < noise
    random_labels = torch.randint(0, f.shape[1], (len(f),), generator=g)
    return torch.where(flip, random_labels, labels)

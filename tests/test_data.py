"""Datasets: the pycorpus file walk and split, byte windows, textfile ranges, synthetic teachers,
and the errors bad input gets."""
from __future__ import annotations

import hashlib

import pytest
import torch

from mutransfer.training import data


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def write(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_pycorpus_reads_the_stdlib_with_a_stable_per_file_split():
    ds = data.pycorpus()
    info = ds.describe()
    assert info["n_bytes"] > 1_000_000 and info["n_bytes"] == info["n_train"] + info["n_val"]
    assert len(info["sha256"]) == 64 and info["python"]
    assert 0.01 < info["n_val_files"] / info["n_files"] < 0.15  # ~5% of files by path hash
    assert data.pycorpus() is ds  # cached: read once per process


def test_pycorpus_skips_test_and_package_dirs_in_sorted_order(tmp_path):
    files = {"b.py": "bbb\n", "a/z.py": "zzz\n", "a/y.py": "yyy\n", "notes.txt": "not python\n",
             "test/t.py": "T", "tests/t.py": "T", "idlelib/idle_test/t.py": "T",
             "lib2to3/tests/t.py": "T", "site-packages/p.py": "P", "dist-packages/p.py": "P"}
    for name, text in files.items():
        write(tmp_path / name, text)
    info = data.pycorpus(tmp_path).describe()
    kept = [files[n].encode() for n in ("a/y.py", "a/z.py", "b.py")]  # sorted relative paths
    assert info["n_files"] == 3 and info["n_bytes"] == sum(map(len, kept))
    assert info["sha256"] == hashlib.sha256(b"".join(kept)).hexdigest()


def test_pycorpus_split_depends_only_on_the_path():
    paths = [f"pkg/module_{i}.py" for i in range(2000)]
    val = [p for p in paths if data._is_val(p)]
    assert val == [p for p in paths if data._is_val(p)]  # stable, not random
    assert 0.03 < len(val) / len(paths) < 0.07


def test_byte_windows_are_shifted_by_one_and_deterministic():
    ds = data.pycorpus()
    x, y = ds.batch("train", 8, 32, gen(1), "cpu")
    assert x.shape == y.shape == (8, 32) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert int(x.max()) < 256 and int(x.min()) >= 0
    x2, _ = ds.batch("train", 8, 32, gen(1), "cpu")
    x3, _ = ds.batch("train", 8, 32, gen(2), "cpu")
    assert torch.equal(x, x2) and not torch.equal(x, x3)
    logits = torch.zeros(8, 32, 256)
    assert float(ds.loss(logits, y)) == pytest.approx(torch.log(torch.tensor(256.0)).item(), rel=1e-5)


def test_textfile_splits_by_contiguous_ranges(tmp_path):
    content = bytes(range(256)) * 8
    path = tmp_path / "corpus.txt"
    path.write_bytes(content)
    ds = data.textfile(path)
    assert bytes(ds.train.tolist()) + bytes(ds.val.tolist()) == content
    assert len(ds.val) == int(len(content) * data.TEXTFILE_VAL_FRACTION)
    assert ds.describe()["sha256"] == hashlib.sha256(content).hexdigest()
    x, y = ds.batch("val", 4, 16, gen(0), "cpu")
    assert torch.equal((x + 1) % 256, y)  # consecutive bytes 0..255 repeating


@pytest.mark.parametrize("kind, out_dim, loss_at_zero", [("classification", 10, 2.302585),
                                                        ("regression", 3, None), ("image", 10, 2.302585)])
def test_synthetic_teacher_tasks(kind, out_dim, loss_at_zero):
    ds = data.synthetic(kind, in_dim=16, out_dim=out_dim, seed=3)
    x, y = ds.batch("train", 32, None, gen(0), "cpu")
    assert x.shape == ((32, 3, 8, 8) if kind == "image" else (32, 16))
    if kind == "regression":
        assert y.shape == (32, out_dim) and y.dtype == torch.float32
        assert float(ds.loss(torch.zeros_like(y), y)) == pytest.approx(float((y**2).mean()))
    else:
        assert y.dtype == torch.int64 and 0 <= int(y.min()) and int(y.max()) < out_dim
        assert len(torch.unique(ds.targets["train"])) > 2  # the teacher uses several classes
        assert float(ds.loss(torch.zeros(32, out_dim), y)) == pytest.approx(loss_at_zero, rel=1e-5)
    again = data.synthetic(kind, in_dim=16, out_dim=out_dim, seed=3)
    other = data.synthetic(kind, in_dim=16, out_dim=out_dim, seed=4)
    assert torch.equal(again.inputs["val"], ds.inputs["val"])
    assert not torch.equal(other.targets["train"], ds.targets["train"])


def test_synthetic_regression_noise_is_the_target_std():
    clean = data.synthetic("regression", in_dim=8, out_dim=1, seed=0, noise=0.0)
    noisy = data.synthetic("regression", in_dim=8, out_dim=1, seed=0, noise=0.5)
    # same seed: same teacher and inputs; the targets differ by the noise alone
    assert torch.equal(clean.inputs["train"], noisy.inputs["train"])
    residual = noisy.targets["train"] - clean.targets["train"]
    assert float(residual.std()) == pytest.approx(0.5, rel=0.05)


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        data.textfile(missing)


def test_corpus_smaller_than_one_window(tmp_path):
    path = tmp_path / "small.txt"
    path.write_bytes(b"x" * 50)
    ds = data.textfile(path)
    too_small = r"45 bytes, fewer than one window of seq_len \+ 1 = 65.*seq_len <= 44"
    with pytest.raises(ValueError, match=too_small):
        ds.batch("train", 4, 64, gen(), "cpu")
    with pytest.raises(ValueError, match="val split"):
        ds.batch("val", 4, 8, gen(), "cpu")


@pytest.mark.parametrize("kwargs, match", [
    ({"seq_len": 0}, "seq_len must be a positive integer; got 0"),
    ({"seq_len": -3}, "seq_len must be a positive integer; got -3"),
    ({"batch_size": 0}, "batch_size must be a positive integer; got 0"),
    ({"split": "test"}, "unknown split 'test'; use one of train, val"),
    ({"seq_len": None}, "needs seq_len"),
])
def test_bad_batch_arguments(kwargs, match):
    args = {"split": "train", "batch_size": 4, "seq_len": 16, **kwargs}
    with pytest.raises(ValueError, match=match):
        data.pycorpus().batch(args["split"], args["batch_size"], args["seq_len"], gen(), "cpu")


@pytest.mark.parametrize("kwargs, match", [
    ({"kind": "images"}, "unknown synthetic kind 'images'"),
    ({"kind": "classification", "out_dim": 1}, "out_dim >= 2"),
    ({"kind": "classification", "noise": 1.5}, "noise must be in"),
    ({"kind": "regression", "in_dim": 0}, "in_dim must be a positive integer"),
])
def test_bad_synthetic_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.synthetic(**kwargs)


def test_pycorpus_root_without_python_files(tmp_path):
    write(tmp_path / "readme.txt", "hello")
    with pytest.raises(ValueError, match="no .py files"):
        data.pycorpus(tmp_path)
    with pytest.raises(ValueError, match="not a directory"):
        data.pycorpus(tmp_path / "readme.txt")

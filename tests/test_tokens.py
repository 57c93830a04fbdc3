"""Token corpora (a prepared folder, loose .bin/.npy files) and data factories: memory-mapped
reads, deterministic windows, the vocab reaching the model, and each bad input refused at open."""
from __future__ import annotations

import hashlib
import json
import os
import textwrap

import numpy as np
import pytest
import torch

from mutransfer.runs import _trial, config_factory, load_config, run_trial
from mutransfer.models import zoo
from mutransfer.training import data

VOCAB = 300


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def ids(n: int, vocab: int = VOCAB, seed: int = 0, dtype=np.uint16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, n).astype(dtype)


def no_scan(*args, **kwargs):
    raise AssertionError("scanned again")


def prepared(folder, n_train: int = 4000, n_val: int = 500, vocab: int = VOCAB, **meta):
    """A prepared folder as `mutransfer data prepare` writes it (uint16 ids below ``vocab``)."""
    folder.mkdir(parents=True, exist_ok=True)
    train, val = ids(n_train, vocab, 0), ids(n_val, vocab, 1)
    train.tofile(folder / "train.bin")
    val.tofile(folder / "val.bin")
    fields = {"vocab_size": vocab, "dtype": "uint16", "train_tokens": n_train, "val_tokens": n_val,
              "max_id": int(max(train.max(), val.max())), "tokenizer": "bpe-test",
              "sources": {"a.txt": "0" * 64}, "format": 1, **meta}
    (folder / "meta.json").write_text(json.dumps({k: v for k, v in fields.items() if v is not None}))
    return folder


def test_a_prepared_folder_is_memory_mapped_and_described(tmp_path):
    ds = data.tokens(prepared(tmp_path / "tok"))
    assert isinstance(ds.train, np.memmap) and isinstance(ds.val, np.memmap)  # never read whole
    assert ds.vocab == VOCAB and str(ds.train.dtype) == "uint16"
    info = ds.describe()
    assert (info["n_train"], info["n_val"], info["vocab"], info["dtype"]) == (4000, 500, VOCAB, "uint16")
    assert info["train_file"].endswith("train.bin") and info["sources"] == {"a.txt": "0" * 64}
    assert len(info["sha256"]) == 64 and info["max_id"] < VOCAB
    x, y = ds.batch("train", 4, 16, gen(), "cpu")
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted by one token
    loss = ds.loss(torch.zeros(4, 16, VOCAB), y)
    assert loss.item() == pytest.approx(np.log(VOCAB), rel=1e-5)  # uniform logits


def test_windows_are_deterministic_across_two_opens_and_mirror_byte_corpora(tmp_path):
    folder = prepared(tmp_path / "tok")
    a, b = data.tokens(folder), data.tokens(folder)
    xa, ya = a.batch("val", 8, 32, gen(3))
    xb, yb = b.batch("val", 8, 32, gen(3))
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(xa, a.batch("val", 8, 32, gen(4))[0])
    # the same draw as ByteCorpus: starts = randint(0, n - seq_len) with the same generator
    starts = torch.randint(0, 500 - 32, (8,), generator=gen(3))
    val = np.fromfile(folder / "val.bin", dtype=np.uint16).astype(np.int64)
    assert torch.equal(xa, torch.from_numpy(np.stack([val[s:s + 32] for s in starts.tolist()])))


@pytest.mark.parametrize("dtype", ["uint16", "uint32"])
def test_loose_bin_files_with_dtype_and_vocab(tmp_path, monkeypatch, dtype):
    vocab = 70000 if dtype == "uint32" else VOCAB
    ids(3000, vocab, 0, np.dtype(dtype)).tofile(tmp_path / "train.bin")
    ids(400, vocab, 1, np.dtype(dtype)).tofile(tmp_path / "val.bin")
    ds = data.tokens(train_file=tmp_path / "train.bin", val_file=tmp_path / "val.bin", dtype=dtype,
                     vocab_size=vocab)
    assert isinstance(ds.train, np.memmap) and str(ds.train.dtype) == dtype and ds.vocab == vocab
    x, _ = ds.batch("train", 2, 8, gen())
    assert x.dtype == torch.int64 and int(x.max()) < vocab
    # the scan is cached beside the file, keyed by size and mtime, with the ids' sha256
    side = json.loads((tmp_path / "train.bin.meta.json").read_text())
    raw = (tmp_path / "train.bin").read_bytes()
    assert side["max_id"] == int(np.frombuffer(raw, dtype=dtype).max())
    assert side["size"] == len(raw) and side["sha256"] == hashlib.sha256(raw).hexdigest()
    assert ds.describe()["file_sha256"]["train"] == side["sha256"] and len(ds.describe()["sha256"]) == 64
    from mutransfer.training import _tokens

    monkeypatch.setattr(_tokens, "_scan", no_scan)  # the next open reads the sidecar
    again = data.tokens(train_file=tmp_path / "train.bin", val_file=tmp_path / "val.bin", dtype=dtype,
                        vocab_size=vocab)
    assert again.max_id == ds.max_id
    ids(3000, vocab, 5, np.dtype(dtype)).tofile(tmp_path / "train.bin")  # rewritten: a new mtime
    os.utime(tmp_path / "train.bin", ns=(1, 1))
    with pytest.raises(AssertionError, match="scanned again"):
        data.tokens(train_file=tmp_path / "train.bin", val_file=tmp_path / "val.bin", dtype=dtype,
                    vocab_size=vocab)


def test_npy_files_are_opened_as_mmap_arrays(tmp_path):
    np.save(tmp_path / "train.npy", ids(2000, dtype=np.int32))
    np.save(tmp_path / "val.npy", ids(300, seed=1, dtype=np.int32))
    ds = data.tokens(train_file=tmp_path / "train.npy", val_file=tmp_path / "val.npy", vocab_size=VOCAB)
    assert isinstance(ds.train, np.memmap)  # np.load(mmap_mode="r")
    x, y = ds.batch("train", 3, 10, gen(1))
    assert x.shape == (3, 10) and torch.equal(x, ds.batch("train", 3, 10, gen(1))[0])


def test_a_folder_without_max_id_is_scanned_once_and_stores_it(tmp_path, monkeypatch):
    folder = prepared(tmp_path / "tok", max_id=None)
    assert "max_id" not in json.loads((folder / "meta.json").read_text())
    first = data.tokens(folder)
    assert json.loads((folder / "meta.json").read_text())["max_id"] == first.max_id
    from mutransfer.training import _tokens

    monkeypatch.setattr(_tokens, "_scan", no_scan)  # the next open reads meta.json's max_id
    assert data.tokens(folder).max_id == first.max_id
    assert data.tokens(folder).describe()["sha256"] == first.describe()["sha256"]


def test_a_token_id_beyond_the_vocab_is_refused_at_open(tmp_path):
    folder = prepared(tmp_path / "tok", vocab=VOCAB)
    with pytest.raises(ValueError, match=r"meta\.json: token id \d+ >= vocab_size 200.*vocab_size = \d+"):
        data.tokens(folder, vocab_size=200)
    ids(1000, VOCAB).tofile(tmp_path / "train.bin")
    ids(100, 10).tofile(tmp_path / "val.bin")
    with pytest.raises(ValueError, match=r"train\.bin: token id \d+ >= vocab_size 100"):
        data.tokens(train_file=tmp_path / "train.bin", val_file=tmp_path / "val.bin", dtype="uint16",
                    vocab_size=100)


def test_a_file_shorter_than_one_window_is_refused(tmp_path):
    folder = prepared(tmp_path / "tok", n_val=20)
    with pytest.raises(ValueError, match=r"val\.bin holds 20 tokens, fewer than one window .* seq_len <= 19"):
        data.tokens(folder, seq_len=32)  # at open, given the config's seq_len
    ds = data.tokens(folder)
    with pytest.raises(ValueError, match=r"val\.bin holds 20 tokens.*seq_len \+ 1 = 21"):
        ds.batch("val", 2, 20, gen())  # and in batch
    assert ds.batch("val", 2, 19, gen())[0].shape == (2, 19)


def test_a_dtype_that_does_not_fit_the_file_size_is_refused(tmp_path):
    (tmp_path / "train.bin").write_bytes(b"\x01\x00" * 101)  # 202 bytes: uint16 yes, uint32 no
    ids(100).tofile(tmp_path / "val.bin")
    with pytest.raises(ValueError, match=r"train\.bin has 202 bytes, not a multiple of uint32's 4.*uint16"):
        data.tokens(train_file=tmp_path / "train.bin", val_file=tmp_path / "val.bin", dtype="uint32",
                    vocab_size=VOCAB)


def test_meta_token_counts_that_disagree_with_the_files_are_refused(tmp_path):
    folder = prepared(tmp_path / "tok", train_tokens=5000)
    with pytest.raises(ValueError, match=r"train\.bin holds 4000 uint16 tokens but .*meta\.json says "
                                         r"train_tokens = 5000.*data prepare"):
        data.tokens(folder)


def test_other_bad_inputs_name_the_file(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty has no meta\.json.*data prepare"):
        data.tokens(tmp_path / "empty")
    np.save(tmp_path / "m.npy", np.zeros((4, 4), dtype=np.int64))
    with pytest.raises(ValueError, match=r"m\.npy holds a 2-D int64 array.*1-D integer"):
        data.tokens(train_file=tmp_path / "m.npy", val_file=tmp_path / "m.npy", vocab_size=VOCAB)
    (tmp_path / "z.bin").write_bytes(b"")
    with pytest.raises(ValueError, match=r"z\.bin is empty"):
        data.tokens(train_file=tmp_path / "z.bin", val_file=tmp_path / "z.bin", dtype="uint16",
                    vocab_size=VOCAB)


TOKENS_TOML = """
name = "tok"
[model]
factory = "mutransfer.zoo:gpt"
width = 32
base_width = 16
kwargs = {{ depth = 1, d_head = 8 }}
[data]
{data}
[train]
steps = 3
batch_size = 4
seq_len = 16
eval_batches = 1
[sweep.space]
lr = [1e-3, 1e-2]
"""


def test_run_trial_on_tokens_gives_the_gpt_the_corpus_vocab(tmp_path, monkeypatch):
    prepared(tmp_path / "tok")
    path = tmp_path / "tok.toml"
    path.write_text(TOKENS_TOML.format(data='source = "tokens"\npath = "tok"'))
    cfg = load_config(path)
    built = []
    real = _trial.parametrize
    monkeypatch.setattr(_trial, "parametrize", lambda *a, **k: built.append(real(*a, **k)) or built[-1])
    res = run_trial(cfg, {"lr": 1e-2}, width=16, device="cpu", seed=0)
    assert res.steps == 3 and np.isfinite(res.final_loss) and not res.diverged
    assert built and built[0].model.wte.weight.shape[0] == VOCAB
    assert config_factory(cfg, zoo.gpt).keywords["vocab"] == VOCAB
    # a factory naming it vocab_size gets it under that name; [model] kwargs wins
    assert config_factory(cfg, lambda width, vocab_size=1: None).keywords["vocab_size"] == VOCAB
    kept = cfg.override({"model.kwargs": {"vocab": 512}})
    assert config_factory(kept, zoo.gpt).keywords["vocab"] == 512
    small = cfg.override({"model.kwargs": {"vocab": 100}})
    with pytest.raises(ValueError, match=r"\[model\] kwargs vocab = 100 but the data .* holds token id"):
        config_factory(small, zoo.gpt)


def test_loose_files_in_a_config_and_byte_corpora_pass_256(tmp_path):
    ids(800).tofile(tmp_path / "train.bin")
    ids(10).tofile(tmp_path / "val.bin")
    path = tmp_path / "tok.toml"
    path.write_text(TOKENS_TOML.format(data='train_file = "train.bin"\nval_file = "val.bin"\n'
                                            f'dtype = "uint16"\nvocab_size = {VOCAB}\nsource = "tokens"'))
    cfg = load_config(path)
    with pytest.raises(ValueError, match=r"val\.bin holds 10 tokens.*seq_len <= 9"):
        run_trial(cfg, {"lr": 1e-2}, width=16, device="cpu", seed=0)  # before any training
    (tmp_path / "corpus.txt").write_text("hello tokens " * 50)
    path.write_text(TOKENS_TOML.format(data='path = "corpus.txt"'))
    assert config_factory(load_config(path), zoo.gpt).keywords["vocab"] == 256


FACTORY = '''
import numpy as np
import torch
import torch.nn.functional as F
from helper_ids import make_ids          # a sibling module of this file

class Ids:
    vocab = 50

    def __init__(self):
        self.splits = {"train": make_ids(2000, 0), "val": make_ids(300, 1)}

    def batch(self, split, batch_size, seq_len, generator=None, device="cpu"):
        data = self.splits[split]
        starts = torch.randint(0, len(data) - seq_len, (batch_size,), generator=generator)
        w = torch.from_numpy(np.stack([data[s:s + seq_len + 1] for s in starts.tolist()])).long()
        return w[:, :-1].to(device), w[:, 1:].to(device)

    def loss(self, outputs, y):
        return F.cross_entropy(outputs.flatten(0, 1).float(), y.flatten())

    def describe(self):
        return {"name": "ids-from-a-factory"}

def make_dataset():
    return Ids()

def wrong():
    return [1, 2, 3]

class HalfDone:
    def loss(self, outputs, y):
        return 0.0

def half():
    return HalfDone()
'''


def test_a_data_factory_from_a_file_trains_and_a_wrong_one_names_the_missing_methods(tmp_path):
    (tmp_path / "helper_ids.py").write_text(textwrap.dedent('''
        import numpy as np

        def make_ids(n, seed):
            return np.random.default_rng(seed).integers(0, 50, n).astype(np.int64)
    '''))
    (tmp_path / "my_data.py").write_text(FACTORY)
    path = tmp_path / "f.toml"
    path.write_text(TOKENS_TOML.format(data=f'factory = "{tmp_path / "my_data.py"}:make_dataset"'))
    cfg = load_config(path)
    res = run_trial(cfg, {"lr": 1e-2}, width=16, device="cpu", seed=0)
    assert res.steps == 3 and np.isfinite(res.final_loss)
    assert config_factory(cfg, zoo.gpt).keywords["vocab"] == 50  # the dataset's vocab attribute
    with pytest.raises(TypeError, match=r"wrong.* returned a list, which lacks batch, loss, describe"):
        data.from_factory(f"{tmp_path / 'my_data.py'}:wrong")
    with pytest.raises(TypeError, match=r"returned a HalfDone, which lacks batch, describe;"):
        data.from_factory(f"{tmp_path / 'my_data.py'}:half")
    with pytest.raises(ValueError, match=r"has no attribute 'nope'.*\[data\] factory"):
        data.from_factory(f"{tmp_path / 'my_data.py'}:nope")
    assert data.from_factory("mutransfer.training.data:pycorpus").describe()["name"] == "pycorpus"

"""Your own text to token ids: `mutransfer data prepare` (text, .jsonl, .parquet; a trained BPE or a
given tokenizer) and [data] source = "hf" (a datasets dataset tokenized once into a cache that a
second process waits for). Everything is made in tmp_path: a 300-token BPE trained on local text."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mutransfer.cli import main
from mutransfer.training import _hf
from mutransfer.training import data as datasets
from mutransfer.training._prepare import is_val, load_tokenizer

pytest.importorskip("tokenizers")
ROOT = Path(__file__).resolve().parents[1]
WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho "
         "sigma tau upsilon phi chi psi omega naïve café 東京 ünïcödé").split()


def sentence(rng: np.random.Generator, n: int) -> str:
    return " ".join(rng.choice(WORDS, n)) + ".\n"


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> dict:
    """Eight small text documents, each file's text by name, in a folder of their own."""
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("texts")
    docs = {f"doc{i}.txt": "".join(sentence(rng, 12) for _ in range(5)) for i in range(8)}
    for name, text in docs.items():
        (folder / name).write_text(text, encoding="utf-8")
    return {"folder": folder, "docs": docs}


@pytest.fixture(scope="module")
def tokenizer(texts, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    return datasets.train_tokenizer([texts["folder"]], 300, path, progress=False)


def records(n: int = 30, field: str = "text") -> list[dict]:
    rng = np.random.default_rng(1)
    return [{field: sentence(rng, 8), "id": i} for i in range(n)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def documents(folder: Path, meta: dict, tokenizer: Path) -> list[str]:
    """The documents of a prepared folder decoded back to text: both splits, cut at the eos id."""
    tok = load_tokenizer(tokenizer)
    out = []
    for split in ("train", "val"):
        ids = np.fromfile(folder / f"{split}.bin", dtype=meta["dtype"])
        assert len(ids) == meta[f"{split}_tokens"]
        cuts = np.flatnonzero(ids == meta["eos_id"])
        out += [tok.decode(part) for part in np.split(ids, cuts + 1) if len(part)]
    return out


def check_meta(meta: dict, folder: Path) -> None:
    on_disk = json.loads((folder / "meta.json").read_text())
    assert on_disk == meta
    assert meta["format"] == 1 and meta["dtype"] == "uint16" and meta["vocab_size"] <= 300
    assert meta["train_tokens"] > 0 and meta["val_tokens"] > 0
    assert 0 <= meta["max_id"] < meta["vocab_size"] and meta["eos_id"] == 0
    assert set(meta["versions"]) >= {"mutransfer", "tokenizers", "datasets"}
    for path, digest in meta["sources"].items():
        assert len(digest) == 64 and Path(path).is_file()


def test_train_tokenizer_gives_a_byte_level_bpe_that_round_trips(texts, tokenizer):
    tok = load_tokenizer(tokenizer)
    assert tok.vocab_size == 300 and tok.eos_id == 0
    text = "gamma café 東京 — a line the BPE never saw ✓\n"
    assert tok.decode(tok.encode([text])[0]) == text
    with pytest.raises(ValueError, match=r"at least 257 tokens .* got 100"):
        datasets.train_tokenizer([texts["folder"]], 100, texts["folder"] / "small.json")


def test_prepare_text_files_trains_a_tokenizer_and_decodes_back(texts, tmp_path):
    out = tmp_path / "prepared"
    meta = datasets.prepare_tokens([texts["folder"]], out, train_tokenizer=300, val_fraction=0.3,
                                   progress=False)
    check_meta(meta, out)
    assert (out / "tokenizer.json").is_file() and meta["tokenizer"]["path"] == str((out / "tokenizer.json").resolve())
    n_val = sum(is_val(name, 0.3) for name in texts["docs"])
    assert meta["split_by"] == "documents" and meta["documents"] == {"train": 8 - n_val, "val": n_val}
    assert sorted(documents(out, meta, out / "tokenizer.json")) == sorted(texts["docs"].values())
    again = datasets.prepare_tokens([texts["folder"]], tmp_path / "again", out / "tokenizer.json",
                                    val_fraction=0.3, progress=False)
    assert again["train_tokens"] == meta["train_tokens"]  # the split is stable: a hash of the path
    assert np.array_equal(np.fromfile(out / "val.bin", "uint16"), np.fromfile(tmp_path / "again" / "val.bin", "uint16"))


def test_prepare_jsonl_reads_the_text_field(tokenizer, tmp_path):
    rows = records(field="body")
    source = write_jsonl(tmp_path / "docs.jsonl", rows)
    meta = datasets.prepare_tokens([str(tmp_path / "*.jsonl")], tmp_path / "out", tokenizer,
                                   text_field="body", val_fraction=0.2, progress=False)
    check_meta(meta, tmp_path / "out")
    assert list(meta["sources"]) == [str(source.resolve())] and meta["text_field"] == "body"
    assert sorted(documents(tmp_path / "out", meta, tokenizer)) == sorted(r["body"] for r in rows)


def test_prepare_parquet(tokenizer, tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = records()
    pq.write_table(pa.table({"text": [r["text"] for r in rows], "id": [r["id"] for r in rows]}),
                   tmp_path / "docs.parquet")
    meta = datasets.prepare_tokens([tmp_path], tmp_path / "out", tokenizer, val_fraction=0.2, progress=False)
    check_meta(meta, tmp_path / "out")
    assert sorted(documents(tmp_path / "out", meta, tokenizer)) == sorted(r["text"] for r in rows)
    with pytest.raises(ValueError, match=r"docs.parquet: no column 'body' \(its columns: 'text', 'id'\).*--text-field"):
        datasets.prepare_tokens([tmp_path / "docs.parquet"], tmp_path / "bad", tokenizer, text_field="body")


def test_a_transformers_tokenizer_folder_loads_offline(texts, tokenizer, tmp_path):
    transformers = pytest.importorskip("transformers")
    transformers.PreTrainedTokenizerFast(tokenizer_file=str(tokenizer), eos_token="<|endoftext|>").save_pretrained(
        tmp_path / "tf")
    meta = datasets.prepare_tokens([texts["folder"]], tmp_path / "out", tmp_path / "tf", val_fraction=0.3,
                                   progress=False)
    assert meta["tokenizer"]["kind"] == "transformers" and meta["versions"]["transformers"]
    assert sorted(documents(tmp_path / "out", meta, tokenizer)) == sorted(texts["docs"].values())


def test_one_document_gives_val_the_tail(tokenizer, tmp_path):
    (tmp_path / "one.md").write_text(sentence(np.random.default_rng(2), 200))
    meta = datasets.prepare_tokens([tmp_path / "one.md"], tmp_path / "out", tokenizer, progress=False)
    assert meta["split_by"] == "tail" and meta["val_tokens"] == max(1, int(0.05 * (meta["train_tokens"] + meta["val_tokens"])))
    assert (tmp_path / "out" / "train.bin").stat().st_size == 2 * meta["train_tokens"]


def test_bad_inputs_are_errors_naming_the_file_and_the_fix(texts, tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"body": "x", "id": 1}])
    with pytest.raises(ValueError, match=r"bad.jsonl: line 1 has no field 'text' \(its fields: 'body', 'id'\); .*--text-field"):
        datasets.prepare_tokens([bad], tmp_path / "o1", tokenizer)
    with pytest.raises(ValueError, match=r"tokenizer 'no-such-org/no-such-tokenizer' (cannot be loaded offline.*"
                                         r"huggingface-cli download|is not a file, so it needs transformers)"):
        datasets.prepare_tokens([texts["folder"]], tmp_path / "o2", "no-such-org/no-such-tokenizer")
    with pytest.raises(ValueError, match=r"no input files match '.*\*\.nothing'"):
        datasets.prepare_tokens([str(tmp_path / "*.nothing")], tmp_path / "o3", tokenizer)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("")
    write_jsonl(tmp_path / "empty" / "b.jsonl", [{"text": ""}, {"text": None}])
    with pytest.raises(ValueError, match=r"empty corpus: the 2 input files .* hold text in field 'text'"):
        datasets.prepare_tokens([tmp_path / "empty"], tmp_path / "o4", tokenizer)
    with pytest.raises(ValueError, match=r"exactly one"):
        datasets.prepare_tokens([texts["folder"]], tmp_path / "o5", tokenizer, train_tokenizer=300)
    with pytest.raises(ValueError, match=r"val_fraction must lie in \(0, 1\)"):
        datasets.prepare_tokens([texts["folder"]], tmp_path / "o6", tokenizer, val_fraction=1.5)


def test_the_cli_prepares_a_folder_and_reports_bad_input(texts, tokenizer, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "prepare", "--help"])
    assert exit_info.value.code == 0 and "--train-tokenizer N" in capsys.readouterr().out
    out = tmp_path / "out"
    assert main(["data", "prepare", str(texts["folder"]), "--out", str(out), "--tokenizer", str(tokenizer),
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"prepared {out}: 8 files, 8 documents" in printed and "vocab_size 300 (uint16" in printed
    assert json.loads((out / "meta.json").read_text())["tokenizer"]["sha256"]
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"body": "x"}])
    assert main(["data", "prepare", str(bad), "--out", str(tmp_path / "o"), "--train-tokenizer", "300",
                 "--quiet"]) == 2
    assert "bad.jsonl: line 1 has no field 'text' (its fields: 'body')" in capsys.readouterr().err
    assert main(["data"]) == 2


# ---- [data] source = "hf" ----------------------------------------------------------------------

@pytest.fixture
def jsonl_data(tmp_path) -> Path:
    pytest.importorskip("datasets")
    folder = tmp_path / "docs"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", records(20))
    write_jsonl(folder / "b.jsonl", records(12, field="text")[::-1])
    return folder


def test_hf_tokenizes_once_and_reuses_the_cache(jsonl_data, tokenizer, tmp_path, monkeypatch):
    calls = []
    real = _hf.tokenize
    monkeypatch.setattr(_hf, "tokenize", lambda *a, **k: calls.append(1) or real(*a, **k))
    cache = tmp_path / "cache"
    folder = datasets.hf_tokens(data_files=str(jsonl_data / "*.jsonl"), tokenizer=str(tokenizer),
                                cache_dir=cache, val_fraction=0.2)
    assert folder.parent == cache and calls == [1]
    meta = json.loads((folder / "meta.json").read_text())
    check_meta(meta, folder)
    assert meta["builder"] == "json" and sorted(meta["sources"]) == [str(jsonl_data / "a.jsonl"), str(jsonl_data / "b.jsonl")]
    rows = records(20) + records(12)[::-1]
    assert sorted(documents(folder, meta, tokenizer)) == sorted(r["text"] for r in rows)
    assert sorted(p.name for p in cache.iterdir()) == sorted([folder.name, folder.name + ".lock"])  # no temp left
    stamp = (folder / "meta.json").stat().st_mtime_ns
    again = datasets.hf_tokens(data_files=str(jsonl_data / "*.jsonl"), tokenizer=str(tokenizer),
                               cache_dir=cache, val_fraction=0.2)
    assert again == folder and calls == [1] and (folder / "meta.json").stat().st_mtime_ns == stamp
    other = datasets.hf_tokens(data_files=str(jsonl_data / "*.jsonl"), tokenizer=str(tokenizer),
                               cache_dir=cache, val_fraction=0.5)
    assert other != folder and calls == [1, 1]  # another split is another key


def test_hf_errors_name_the_data_and_the_fix(jsonl_data, tokenizer, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match=r"a.jsonl, .*: no field 'body' \(its fields: 'text', 'id'\); set \[data\] text_field"):
        datasets.hf_tokens(data_files=str(jsonl_data / "*.jsonl"), text_field="body", tokenizer=str(tokenizer),
                           cache_dir=cache)
    with pytest.raises(ValueError, match=r"no input files match data_files '.*\*\.parquet'.*check the path"):
        datasets.hf_tokens(data_files=str(jsonl_data / "*.parquet"), tokenizer=str(tokenizer), cache_dir=cache)
    with pytest.raises(ValueError, match=r"dataset 'no-such-org/no-such-dataset' is neither a local file or folder "
                                         r"nor in the Hugging Face cache.*download it once"):
        datasets.hf_tokens("no-such-org/no-such-dataset", tokenizer=str(tokenizer), cache_dir=cache)
    with pytest.raises(ValueError, match=r"tokenizer file '.*a.jsonl' is not a tokenizers JSON file"):
        datasets.hf_tokens(data_files=str(jsonl_data / "*.jsonl"), tokenizer=str(jsonl_data / "a.jsonl"),
                           cache_dir=cache)
    write_jsonl(jsonl_data / "c.jsonl", [{"text": ""}])
    with pytest.raises(ValueError, match=r"empty corpus: .*c.jsonl gave 0 tokens; check that 'text' holds text"):
        datasets.hf_tokens(data_files=str(jsonl_data / "c.jsonl"), tokenizer=str(tokenizer), cache_dir=cache)
    assert not [p for p in cache.iterdir() if p.is_dir()]  # a failed run leaves no folder


RACER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from mutransfer.training import _hf

    data_files, tokenizer, cache, log, me = sys.argv[1:]
    real = _hf.tokenize

    def slow(*args, **kwargs):  # hold the lock long enough for the other process to queue
        with open(log, "a") as fh:
            fh.write(me + "\\n")
        time.sleep(1.0)
        return real(*args, **kwargs)

    _hf.tokenize = slow
    Path(log + "." + me).touch()  # both imported: start together
    while not all(Path(log + "." + i).exists() for i in "01"):
        time.sleep(0.01)
    print(_hf.hf_tokens(data_files=data_files, tokenizer=tokenizer, cache_dir=cache))
""")


def test_two_processes_racing_on_the_cache_tokenize_once(jsonl_data, tokenizer, tmp_path):
    cache, log = tmp_path / "cache", tmp_path / "log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(jsonl_data / "*.jsonl"), str(tokenizer),
                               str(cache), str(log), str(i)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    folders = {out.strip().splitlines()[-1] for out, _ in results}
    assert len(log.read_text().split()) == 1  # one process tokenized
    assert sum("waiting for another process" in err for _, err in results) == 1
    assert len(folders) == 1
    folder = Path(folders.pop())
    assert (folder / "meta.json").is_file() and folder.parent == cache
    assert [p.name for p in cache.iterdir() if p.is_dir() or p.name.startswith(".")] == [folder.name]


def test_make_dataset_reads_the_hf_cache_as_tokens(jsonl_data, tokenizer, tmp_path):
    """A config with source "hf" tokenizes once into the cache and reads it as a TokenCorpus; a
    trial on it trains the zoo GPT with the tokenizer's vocabulary."""
    import torch

    from mutransfer.runs import load_config, run_trial
    from mutransfer.runs._trial import make_dataset

    (tmp_path / "tok.json").write_bytes(tokenizer.read_bytes())
    (tmp_path / "exp.toml").write_text('name = "hf"\n[model]\nwidth = 32\nbase_width = 16\n'
                                       '[data]\nsource = "hf"\ndata_files = "docs/*.jsonl"\n'
                                       'tokenizer = "tok.json"\ncache_dir = "cache"\n'
                                       '[train]\nsteps = 2\nseq_len = 8\nbatch_size = 4\neval_batches = 1\n'
                                       '[sweep.space]\nlr = [1e-3, 1e-2]\n')
    cfg = load_config(tmp_path / "exp.toml")
    corpus = make_dataset(cfg.data, cfg.train.seq_len)
    folder = Path(corpus.describe()["path"]) if "path" in corpus.describe() else None
    meta = json.loads(next((tmp_path / "cache").glob("*/meta.json")).read_text())
    assert corpus.vocab == meta["vocab_size"] and meta["tokenizer"]["path"] == str(tmp_path / "tok.json")
    assert folder is None or folder.parent == tmp_path / "cache"
    x, y = corpus.batch("train", 2, 8, torch.Generator().manual_seed(0))
    assert x.shape == (2, 8) and int(x.max()) < corpus.vocab
    res = run_trial(cfg, {"lr": 1e-3}, width=32, device="cpu", seed=0)
    assert math.isfinite(res.final_loss)

def test_the_cli_tokenizes_the_standard_library_with_stdlib(texts, tmp_path, monkeypatch, capsys):
    """--stdlib adds the .py files pycorpus reads (here a few of them, for speed)."""
    from mutransfer.training import data as data_module

    files = data_module.stdlib_files()[:5]
    assert files and all(f.suffix == ".py" and "site-packages" not in f.parts for f in files)
    monkeypatch.setattr(data_module, "stdlib_files", lambda: files)
    out = tmp_path / "std"
    assert main(["data", "prepare", "--stdlib", "--out", str(out), "--train-tokenizer", "300", "--quiet"]) == 0
    assert set(json.loads((out / "meta.json").read_text())["sources"]) == {str(f) for f in files}
    assert main(["data", "prepare", "--out", str(tmp_path / "none"), "--train-tokenizer", "300"]) == 2
    assert "nothing to tokenize: give INPUT files, folders or globs, or --stdlib" in capsys.readouterr().err

"""The whole path on tokens, as sweeps/tokens-quickstart.toml runs it, at toy size and offline: a
300-token BPE trained on a few stdlib files (`mutransfer data prepare --stdlib` in small), the proxy
sweep, the transfer, and the target as `mutransfer train` on 2 gloo ranks with FSDP2, whose losses
are one process's up to summation order (issue 30 item 6)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ranks import cli, start_ranks
from tiny import tiny_tokens

import mutransfer
from mutransfer.runs import _trial, load_config, to_toml

pytest.importorskip("tokenizers")
ROOT = Path(__file__).resolve().parents[1]
VOCAB = 300
TOY = {"model.width": 32, "model.base_width": 8, "sweep.width": 16, "sweep.trials": 4,
       "sweep.space": {"lr": [0.004, 0.016, 0.064, 0.256]},
       "train.steps": 10, "train.batch_size": 8, "train.seq_len": 16, "train.eval_every": 5,
       "train.eval_batches": 1}


def test_the_tokens_quickstart_runs_at_toy_size(tmp_path, monkeypatch):
    data = tmp_path / "data"
    meta = tiny_tokens(data, VOCAB)
    assert {p.name for p in data.iterdir()} == {"train.bin", "val.bin", "meta.json", "tokenizer.json"}
    assert meta["vocab_size"] == VOCAB and meta["train_tokens"] > 10_000 and meta["val_tokens"] > 16

    cfg = load_config(ROOT / "sweeps" / "tokens-quickstart.toml", overrides={"data.path": str(data), **TOY})
    assert cfg.data.source == "tokens" and cfg.train.parallel == "fsdp"
    study = mutransfer.sweep(cfg, reports_dir=tmp_path / "reports", show_progress=False)
    losses = [t.value for t in study.trials]
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)
    assert min(losses) < math.log(VOCAB) - 1 and min(losses) < max(losses) - 0.5  # learns; the lr matters
    plan = mutransfer.transfer([study], cfg.model.width, scheme=cfg.parametrization.scheme,
                               optimizer=cfg.parametrization.optimizer)
    assert plan.target_width == 32 and 0.004 <= plan.lr <= 0.256 * 4
    (tmp_path / "plan.json").write_text(plan.to_json())

    # the target as the quickstart's last command runs it: `torchrun --nproc_per_node=2 -m
    # mutransfer train CONFIG` (here on gloo), with the overridden config written out
    config = tmp_path / "tokens-quickstart.toml"
    config.write_text(to_toml(cfg.to_dict()))
    ranks = start_ranks(cli, world=2, init_group=False,
                        argv=["train", str(config), "--plan", str(tmp_path / "plan.json"),
                              "--reports", str(tmp_path / "reports")])

    # meanwhile, the same target in one process; its model embeds the data's vocab
    built = []
    real = _trial.parametrize
    monkeypatch.setattr(_trial, "parametrize", lambda *a, **k: built.append(real(*a, **k)) or built[-1])
    one = mutransfer.train_target(cfg.override({"train.parallel": "none"}), plan, device="cpu",
                                  progress=False)
    assert built[0].model.wte.weight.shape == (VOCAB, 32)
    assert built[0].model.readout.weight.shape[0] == VOCAB
    assert not one.diverged and one.final_loss < min(losses) + 0.5

    assert ranks.wait() == [0, 0]
    two = pd.read_csv(tmp_path / "reports" / cfg.name / "train-w32" / "history.csv")
    assert len(two) == len(one.history) == cfg.train.steps
    for column in ("train_loss", "eval_loss", "grad_norm", "lr", "tokens"):
        pd.testing.assert_series_equal(two[column], one.history[column], rtol=1e-5, atol=1e-6,
                                       check_dtype=False)
    assert np.isfinite(two["eval_loss"].iloc[-1])

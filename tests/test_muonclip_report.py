"""The MuonClip report module end to end at toy sizes: each part's CSV, then index.md and figures."""
from __future__ import annotations

import pandas as pd

import mutransfer.experiments.muonclip as muonclip


def test_parts_and_write(tmp_path, monkeypatch):
    monkeypatch.setattr(muonclip, "OUT", tmp_path)
    logits = muonclip.run_logits(widths=(16,), log2_lrs=(-2.0,), tau=1.0, steps=4)
    assert set(logits.tau.fillna(-1)) == {-1.0, 1.0} and logits.max_logit.notna().all()
    logits.to_csv(tmp_path / "logits.csv", index=False)
    decay = muonclip.run_decay(widths=(16,), seeds=(0,), steps=4)
    assert set(decay.decay) == {"none", "decoupled", "spectral"}
    decay.to_csv(tmp_path / "decay.csv", index=False)
    index = muonclip.write(tmp_path).read_text()
    assert "Not measured: run `python -m mutransfer.experiments.muonclip transfer`" in index
    for png in ("logits.png", "sigma.png"):
        assert (tmp_path / png).stat().st_size > 0 and f"]({png})" in index
    table = muonclip.decay_table(pd.read_csv(tmp_path / "decay.csv"))
    assert table.set_index("decay").loc["decoupled", "time ratio"] == "1.000"

"""The MuonClip report module end to end at toy sizes: each part's CSV, then index.md and figures."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

import mutransfer.experiments.muonclip as muonclip


CONFIG = Path(__file__).resolve().parents[1] / "sweeps" / "gpt-cpu.toml"


def test_parts_and_write(tmp_path):
    logits = muonclip.run_logits(widths=(16,), log2_lrs=(-2.0,), tau=1.0, steps=4, config=CONFIG)
    assert set(logits.tau.fillna(-1)) == {-1.0, 1.0} and logits.max_logit.notna().all()
    logits.to_csv(tmp_path / "logits.csv", index=False)
    decay = muonclip.run_decay(widths=(16,), seeds=(0,), steps=4, config=CONFIG)
    assert set(decay.decay) == {"none", "decoupled", "spectral"}
    decay.to_csv(tmp_path / "decay.csv", index=False)
    assert muonclip.main(["write", "--config", str(CONFIG), "--out", str(tmp_path)]) == 0
    index = (tmp_path / "index.md").read_text()
    assert "Not measured: run `python -m mutransfer.experiments.muonclip transfer`" in index
    for png in ("logits.png", "sigma.png"):
        assert (tmp_path / png).stat().st_size > 0 and f"]({png})" in index
    from mutransfer.validation._report_muonclip import decay_table

    table = decay_table(pd.read_csv(tmp_path / "decay.csv"))
    assert table.set_index("decay").loc["decoupled", "time ratio"] == "1.000"


def test_target_loss_figure_plots_the_max_logit(tmp_path):
    from mutransfer.validation import plot_training

    history = pd.DataFrame({"step": [1, 2, 3], "lr": [1e-3] * 3, "train_loss": [3.0, 2.5, 2.2],
                            "eval_loss": [float("nan"), float("nan"), 2.3], "tokens": [64, 128, 192],
                            "max_logit": [40.0, 31.0, 30.5]})
    fig_path = plot_training(history, tmp_path / "with.png", tau=30.0)
    plain = plot_training(history.drop(columns="max_logit"), tmp_path / "without.png")
    from PIL import Image

    assert Image.open(fig_path).size[1] > Image.open(plain).size[1]  # the extra max-logit panel

"""The width-and-depth comparison (python -m mutransfer.experiments.depth) end to end on a toy."""
from __future__ import annotations

import json
from pathlib import Path

from mutransfer.experiments import depth

ROOT = Path(__file__).resolve().parents[1]


def test_the_five_arms_run_share_the_shallow_proxy_and_write_the_report(tmp_path):
    cfg_path = tmp_path / "toy.toml"
    text = (ROOT / "sweeps" / "gpt-cpu-depth-headline.toml").read_text()
    text = text.replace('name = "gpt-cpu-depth-headline"', 'name = "toy-depth"')
    text = text.replace("width = 256 ", "width = 32 ").replace("base_width = 64", "base_width = 16")
    text = text.replace("depth = 8 ", "depth = 4 ").replace("steps = 300", "steps = 4\nseq_len = 16")
    text = text.replace("seq_len = 64\n", "").replace("eval_every = 100", "eval_every = 4")
    text = text.replace("eval_batches = 4", "eval_batches = 1").replace("width = 64 ", "width = 16 ")
    text = text.replace("trials = 9", "trials = 3").replace("batch_size = 16", "batch_size = 4")
    text = text.replace('lr = [0.000244140625, 0.00048828125, 0.0009765625, 0.001953125, 0.00390625, '
                        '0.0078125, 0.015625, 0.03125, 0.0625]', "lr = [0.001, 0.004, 0.016]")
    text += '\n[model.kwargs]\nseq_len = 16\n'
    cfg_path.write_text(text)
    assert depth.main(["run", "--config", str(cfg_path), "--reports", str(tmp_path)]) == 0
    out = tmp_path / "toy-depth"
    rows = {a: json.loads((out / f"headline-{a}.json").read_text()) for a in depth.ARMS}
    assert (rows["sp-direct"]["tuned_width"], rows["sp-direct"]["tuned_depth"]) == (32, 4)
    assert (rows["width-only-deep"]["tuned_width"], rows["width-only-deep"]["tuned_depth"]) == (16, 4)
    assert rows["width-only"]["lr"] == rows["width-and-depth"]["lr"]  # one shared 2-block proxy
    assert rows["width-only"]["tuning_flops"] == rows["width-and-depth"]["tuning_flops"]
    assert rows["width-only"]["losses"] != rows["width-and-depth"]["losses"]  # the depth rules act
    assert rows["depth-auto"]["trials"] == rows["width-and-depth"]["trials"]  # the shared proxy, plus the probe:
    assert rows["depth-auto"]["tuning_flops"] > rows["width-and-depth"]["tuning_flops"]
    assert any("depth_alpha auto: the probe at 8 blocks" in w for w in rows["depth-auto"]["plan_warnings"])
    text = (out / "headline.md").read_text()
    assert "python -m mutransfer.experiments.depth run" in text and "| width-and-depth | 16 x 2 |" in text
    assert (out / "headline.png").stat().st_size > 5000

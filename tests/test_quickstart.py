"""The quickstart runs the whole path (coord check, sweep, transfer, validation, report) in its
smoke size, and finds its experiment with or without a source checkout."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from mutransfer.cli import quickstart as qs
from mutransfer.runs import load_config, to_toml
from tiny import run_command

ROOT = Path(__file__).resolve().parents[1]


def cli(*argv) -> int:
    return run_command(qs, "quickstart", *argv)


def test_smoke_quickstart_runs_end_to_end_and_writes_the_report(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MUTRANSFER_SMOKE", "1")
    assert cli("--out", "out", "--device", "cpu") == 0  # its wall time is in the README, not asserted
    assert capsys.readouterr().out.rstrip().endswith("The report is in out/quickstart-smoke/index.md")
    folder = tmp_path / "out" / "quickstart-smoke"
    for name in ("config.toml", "coord.md", "coord.png", "plan.json", "validate.csv", "validate.md",
                 "validate.png", "quickstart-smoke-w16/trials.csv", "train-w64/loss.png", "plan.png",
                 "compare.md", "compare.png", "best.png"):
        assert (folder / name).is_file(), name
    text = (folder / "index.md").read_text()
    for section in ("## What was run", "## Coordinate check", "## Proxy sweep", "## Transfer plan",
                    "## Target trained with the plan", "## Validation",
                    "## Transfer against direct tuning at the target"):
        assert section in text
    assert "Not run yet" not in text
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(images) >= 4 and all((folder / link).is_file() for link in images)
    assert "mutransfer validate out/quickstart-smoke/config.toml --widths 16,32,64" in text
    assert "mutransfer compare out/quickstart-smoke/config.toml --seeds 1 --reuse --reports out" in text


def test_the_embedded_experiment_is_the_shipped_one():
    assert qs.QUICKSTART_TOML == (ROOT / "sweeps" / "quickstart.toml").read_text(), \
        "sweeps/quickstart.toml changed: copy it into QUICKSTART_TOML (used when installed)"


def test_an_installed_package_falls_back_to_the_embedded_experiment(monkeypatch, tmp_path):
    import mutransfer

    monkeypatch.setattr(mutransfer, "__file__", str(tmp_path / "site" / "mutransfer" / "__init__.py"))
    assert qs.quickstart_config() == load_config(ROOT / "sweeps" / "quickstart.toml")


def test_the_written_config_reads_back_identically(tmp_path):
    cfg = qs.quickstart_config(smoke=True)
    path = tmp_path / "config.toml"
    path.write_text(to_toml(cfg.to_dict()))
    assert load_config(path) == cfg
    with pytest.raises(TypeError, match="cannot write"):
        to_toml({"x": object()})

"""The report gathers every step's files into index.md: each section is there, names the command
that regenerates it, and links only images that exist; a step not run yet says so."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from mutransfer.cli import coord_check as coord_cmd
from mutransfer.cli import report as report_cmd
from mutransfer.cli import train as train_cmd
from mutransfer.cli import transfer as transfer_cmd
from mutransfer.validation._report import write_report
from mutransfer.tuning._sweep import sweep
from mutransfer.projection._transfer import transfer
from mutransfer.validation._validate import validate
from tiny import run_command, write_tiny_mlp

SECTIONS = ("## What was run", "## Coordinate check", "## Proxy sweep", "## Transfer plan",
            "## Target trained with the plan", "## Validation: lr landscapes across widths")


@pytest.fixture
def config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the report writes paths relative to the working directory
    return write_tiny_mlp(tmp_path, "rep", trials=5, lrs=[0.001, 0.004, 0.016, 0.064, 0.25],
                          sampler="grid", pruner="none")


def links(markdown: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)


def test_a_report_before_any_run_says_what_to_run(config):
    path = write_report(config, "reports")
    assert path == Path("reports/rep/index.md")
    text = path.read_text()
    assert [s for s in SECTIONS if s not in text] == []
    for command in ("mutransfer coord-check rep.toml --out reports/rep", "mutransfer sweep rep.toml",
                    "mutransfer transfer rep.toml --out reports/rep/plan.json",
                    "mutransfer train rep.toml", "mutransfer validate rep.toml"):
        assert f"Not run yet: run `{command}" in text
    assert text.count("Not run yet") == 5
    assert 'name = "rep"' in text and "| torch |" in text and "| optuna |" in text
    assert "| data | name `synthetic:classification`" in text and "seed `0`" in text
    assert links(text) == []


def test_a_full_report_has_every_section_and_working_links(config):
    run_command(coord_cmd, "coord-check", config.name, "--widths", "8,16,32,64", "--seeds", "1",
                "--steps", "2", "--out", "reports/rep")
    study = sweep(config, device="cpu", show_progress=False)
    (Path("reports/rep") / "plan.json").write_text(transfer([study], 64, scheme="mup", optimizer="adamw").to_json())
    run_command(train_cmd, "train", config.name, "--device", "cpu")
    run_command(transfer_cmd, "transfer", config.name, "--target-width", "64", "--out", "reports/rep/plan-cli.json")
    validate(config, widths=[16, 32], schemes=["sp", "mup"], optimizers=["adamw"],
             log2_lrs=[-9, -7, -5, -3], seeds=1, device="cpu", show_progress=False)

    assert run_command(report_cmd, "report", str(config)) == 0
    index = Path("reports/rep/index.md")
    text = index.read_text()
    assert [s for s in SECTIONS if s not in text] == []
    assert "Not run yet" not in text
    found = links(text)
    assert {"coord.png", "validate.png", "rep-w16/history.png", "rep-w16/slice.png",
            "train-w64/loss.png", "plan-cli.png"} <= set(found)
    for link in found:
        assert not Path(link).is_absolute() and (index.parent / link).is_file(), link
    for command in ("mutransfer coord-check rep.toml", "mutransfer sweep rep.toml",
                    "mutransfer transfer rep.toml", "mutransfer validate rep.toml --widths 16,32",
                    "mutransfer train rep.toml --plan reports/rep/plan.json --width 64"):
        assert command in text
    assert "### rep-w16" in text and "| number | value | lr |" in text
    assert "### plan.json" in text and "### plan-cli.json" in text, "every plan in the folder, plan.json first"
    assert text.index("### plan.json") < text.index("### plan-cli.json")
    assert ("Regenerate: `mutransfer transfer rep.toml --studies rep-w16 --target-width 64 "
            "--out reports/rep/plan-cli.json`") in text, "the plan's own command, as it was run"
    assert "mutransfer transfer plan" in text and "#### eta* per width: mup + adamw" in text
    assert "### Coordinate check: " in text, "coord.md's heading sits under the report's section"

"""Every experiment reads the paths it is given (--config, --out), not the repository's folders,
and its page is written from the results stored in a folder."""
from __future__ import annotations

import importlib
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# module, a WHAT, whether it takes --config
EXPERIMENTS = [("regret", "write", True), ("batch_at_budget", "write", True),
               ("batch_across_budgets", "write", True), ("muonclip", "write", True),
               ("bare_table", "write", False), ("batch_noise", "run", True)]


@pytest.mark.parametrize("name, what, config", EXPERIMENTS, ids=[e[0] for e in EXPERIMENTS])
def test_each_experiment_takes_its_config_and_output_folder(name, what, config, capsys):
    module = importlib.import_module(f"mutransfer.experiments.{name}")
    with pytest.raises(SystemExit) as help_exit:
        module.main(["--help"])
    assert help_exit.value.code == 0
    usage = capsys.readouterr().out
    assert "--out" in usage and ("--config" in usage) == config
    assert "parents[" not in Path(module.__file__).read_text()  # no path from the package's own folder


def test_the_bare_table_page_is_written_from_its_stored_results(tmp_path):
    from mutransfer.experiments import bare_table

    shutil.copy(ROOT / "reports" / "bare-table" / "results.json", tmp_path / "results.json")
    assert bare_table.main(["write", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "index.md").read_text()
    assert text.startswith("# A bare positional table") and "python -m mutransfer.experiments.bare_table run" in text
    with pytest.raises(ValueError, match="no .*results.json: run"):
        bare_table.main(["write", "--out", str(tmp_path / "empty")])


def test_reports_holds_only_results():
    assert sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "reports").rglob("*.py")) == []


def test_write_bare_table_report_rebuilds_the_committed_page_from_results_json(tmp_path):
    from mutransfer.validation import write_bare_table_report

    shutil.copy(ROOT / "reports" / "bare-table" / "results.json", tmp_path / "results.json")
    assert write_bare_table_report(tmp_path) == tmp_path / "index.md"
    assert (tmp_path / "index.md").read_text() == (ROOT / "reports" / "bare-table" / "index.md").read_text()
    with pytest.raises(ValueError, match="no .*results.json: run"):
        write_bare_table_report(tmp_path / "empty")


def test_write_batch_noise_report_draws_the_page_and_figure_from_results_json(tmp_path):
    import json

    from mutransfer.validation import write_batch_noise_report

    shutil.copy(ROOT / "reports" / "batch-noise" / "results.json", tmp_path / "results.json")
    assert write_batch_noise_report(tmp_path) == tmp_path / "index.md"
    text = (tmp_path / "index.md").read_text()
    assert text.startswith("# Batch noise scales") and "python -m mutransfer.experiments.batch_noise run" in text
    assert "| law (surge) B_noise, effective examples B / c | 1212 | [575, 2226] |" in text
    assert (tmp_path / "noise.png").stat().st_size > 10_000
    assert text == (ROOT / "reports" / "batch-noise" / "index.md").read_text()  # the committed page is generated
    # every number comes from results.json: change one and the page follows
    done = json.loads((tmp_path / "results.json").read_text())
    done["gpt"]["b_simple"] = 50.0
    (tmp_path / "results.json").write_text(json.dumps(done))
    assert "| measured B_simple at the proxies' loss | 50 |" in write_batch_noise_report(tmp_path).read_text()
    (tmp_path / "results.json").write_text(json.dumps({"teacher": []}))
    with pytest.raises(ValueError, match="lacks .*meter"):
        write_batch_noise_report(tmp_path)
    with pytest.raises(ValueError, match="no .*results.json: run"):
        write_batch_noise_report(tmp_path / "empty")


def test_the_batch_noise_page_is_written_from_its_stored_results(tmp_path):
    from mutransfer.experiments import batch_noise

    shutil.copy(ROOT / "reports" / "batch-noise" / "results.json", tmp_path / "results.json")
    assert batch_noise.main(["write", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "index.md").read_text() == (ROOT / "reports" / "batch-noise" / "index.md").read_text()


def test_the_corpora_report_is_written_from_the_stored_landscapes(tmp_path):
    """reports/tokens-vs-bytes from the two validate.csv it reads: eta* per corpus and width,
    the shift between corpora and whether the intervals overlap; a missing one names its command."""
    import shutil

    from mutransfer.validation import write_corpora_report

    reports = Path(__file__).resolve().parents[1] / "reports"
    corpora = {}
    for name in ("tokens-bpe-300", "tokens-bytes-300"):
        (tmp_path / name).mkdir()
        shutil.copy(reports / name / "validate.csv", tmp_path / name / "validate.csv")
        corpora[name] = tmp_path / name
    page = write_corpora_report(tmp_path / "out", corpora).read_text()
    assert (tmp_path / "out" / "corpora.png").stat().st_size > 0
    committed = (reports / "tokens-vs-bytes" / "index.md").read_text()
    for row in ("| 64 | -5.03 [-5.26, -4.53] |", "| 64 | -4.56 [-4.65, -4.30] |"):
        assert row in page and row in committed
    assert "width 64: eta* on tokens-bytes-300 is +0.47 octaves from tokens-bpe-300's" in page
    with pytest.raises(ValueError, match=r"no .*nowhere/validate.csv: run `mutransfer validate"):
        write_corpora_report(tmp_path / "x", {"a": tmp_path / "nowhere", "b": tmp_path / "tokens-bpe-300"})

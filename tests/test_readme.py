"""The README stays true: its Python examples run as written, its links resolve, every command it
shows parses with the real command line, and its test command is the one CI runs."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)
DOCS = [ROOT / "README.md", ROOT / "reports" / "README.md"]
MAX_LINES = 265


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_blocks_run(code, tmp_path, monkeypatch, request):
    (tmp_path / "sweeps").symlink_to(ROOT / "sweeps")  # examples name sweeps/*.toml as in a checkout
    if "reports/tokens-quickstart/data" in code:  # what the tokens quickstart prepares
        request.getfixturevalue("quickstart_tokens")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})


def test_readme_has_examples_and_stays_short():
    assert len(BLOCKS) >= 2
    assert len(README.splitlines()) <= MAX_LINES, "README.md is for users: long results go to reports/README.md"


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    command = "python -m pytest -q"
    assert command in README and ci.rstrip().splitlines()[-1] == command


def links(path: Path) -> list[str]:
    """Relative link targets of a markdown file (images included), without #anchors."""
    found = re.findall(r"\]\(([^)\s]+)\)", path.read_text())
    return [t.split("#")[0] for t in found if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves(doc):
    missing = [t for t in links(doc) if not (doc.parent / t).exists()]
    assert missing == [], f"{doc.name} links to missing files: {missing}"


def commands(text: str) -> list[str]:
    """`mutransfer ...` and `python -m mutransfer.bench ...` command lines in code spans and blocks."""
    spans = re.findall(r"`([^`\n]+)`", text) + re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = [ln.split("#")[0].strip() for span in spans for ln in span.splitlines()]
    out = []
    for line in lines:
        for part in re.split(r"&&|;", line):
            part = part.strip()
            if part.startswith(("mutransfer ", "python -m mutransfer.bench ")) and " " in part:
                out.append(part)
    return out


def _parse(command: str) -> None:
    from mutransfer import bench
    from mutransfer.cli import build_parser

    words = shlex.split(command.replace("\\|", "|"))
    if len(words) == 2:  # a verb named in prose: it exists
        words.append("--help")
    if words[0] == "python":
        bench.build_parser().parse_args(words[3:])
    else:
        build_parser().parse_args(words[1:])


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_parses(doc, capsys):
    """Each command's verb and flags exist (argparse exits with code 2 on an unknown one)."""
    bad = []
    for command in commands(doc.read_text()):
        if re.search(r"[A-Z]{3,}|\.\.\.|<|\|", command):  # a placeholder (CONFIG, <name>) or a list of verbs
            continue
        try:
            _parse(command)
        except SystemExit as exit_:
            if exit_.code not in (0, None):
                bad.append(command)
    assert bad == [], "commands that do not parse:\n" + "\n".join(bad)


def test_the_command_check_catches_a_wrong_flag():
    with pytest.raises(SystemExit):
        _parse("mutransfer sweep sweeps/quickstart.toml --no-such-flag")
    assert commands("run `mutransfer sweep x.toml` then `mutransfer transfer x.toml --target-batch auto`") == [
        "mutransfer sweep x.toml", "mutransfer transfer x.toml --target-batch auto"]

"""The `mutransfer` command: --help on every subcommand, --version, and errors as exit codes."""
from __future__ import annotations

import pytest

from mutransfer import __version__
from mutransfer.cli import COMMANDS, main


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: mutransfer {name}") and "options:" in out


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"mutransfer {__version__}"


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "commands:" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["sweep", "transfer", "train", "validate", "report"])
def test_a_missing_config_is_a_one_line_error_and_exit_2(name, tmp_path, capsys):
    missing = tmp_path / "nope.toml"
    assert main([name, str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mutransfer {name}: error:") and "nope.toml" in err

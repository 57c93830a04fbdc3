"""The benchmark CLI runs (tiny sizes) and prints its table; speed targets live in the notes."""
from __future__ import annotations

import pytest

from mutransfer import bench


def test_coord_benchmark_prints_a_table(capsys):
    assert bench.main(["coord", "--widths", "16", "32", "--seeds", "1", "--steps", "1", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "median_s" in out and "16,32" in out


def test_bad_repeats_is_refused():
    with pytest.raises(SystemExit, match="--repeats must be >= 1"):
        bench.main(["optim", "--repeats", "0"])


def test_roles_benchmark_prints_a_table(capsys):
    pytest.importorskip("transformers")
    assert bench.main(["roles", "--width", "128", "--base-width", "32", "--layers", "1",
                       "--experts", "2", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "infer_roles" in out and "parametrize(meta)" in out and "median_s" in out

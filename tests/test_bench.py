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


def test_qkclip_benchmark_rows():
    from mutransfer.bench import muonclip_step_times

    table = muonclip_step_times(repeats=2, width=32, seq_len=16, batch_size=4)
    assert set(table.variant) == {"baseline", "QK-Clip", "spectral decay"}
    assert (table[table.variant == "baseline"].ratio == 1.0).all()


def test_compile_benchmark_prints_a_table(capsys):
    assert bench.main(["compile", "--widths", "32", "--seq-len", "16", "--batch-size", "2",
                       "--repeats", "1", "--backend", "eager", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "compiled (eager)" in out and "compile_s" in out and "ratio" in out

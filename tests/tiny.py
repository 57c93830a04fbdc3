"""Shared test helpers: the tiny MLP experiment (TOML) and running one CLI subcommand.

Tests import it as ``from tiny import ...`` (pytest puts tests/ on sys.path).

    >>> path = write_tiny_mlp(tmp_path, "rep", trials=5, lrs=[0.001, 0.01], sampler="grid")
    >>> code = run_command(validate_cmd, "validate", str(path), "--check")
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

LOG_RANGE = "{ low = 1e-4, high = 1e-1, log = true }"  # the default lr space: sampled log-uniformly


def tiny_mlp_toml(name: str = "tiny", *, trials: int = 4, lrs: Sequence[float] | None = None,
                  sampler: str | None = None, pruner: str | None = None) -> str:
    """The config text of a 2-layer MLP (width 64, base 8) on 8 -> 4 synthetic data, 10 steps.

    Args:
        name: the experiment's name (study names and report folders derive from it).
        trials: the sweep's number of trials, at width 16.
        lrs: the sweep's lr values (a grid), or None for log-uniform in [1e-4, 1e-1].
        sampler, pruner: the sweep's, when given (else the config's defaults).

        >>> text = tiny_mlp_toml("rep", trials=5, lrs=[0.001, 0.004], sampler="grid", pruner="none")
        >>> Path("rep.toml").write_text(text)
    """
    sweep = [f"trials = {trials}"]
    sweep += [f'sampler = "{sampler}"'] if sampler is not None else []
    sweep += [f'pruner = "{pruner}"'] if pruner is not None else []
    lr = LOG_RANGE if lrs is None else "[" + ", ".join(str(v) for v in lrs) + "]"
    return "\n".join([
        "", f'name = "{name}"',
        "[model]", 'factory = "mutransfer.zoo:mlp"', "width = 64", "base_width = 8",
        "kwargs = { depth = 2 }",
        "[data]", 'source = "synthetic"', "in_dim = 8", "out_dim = 4",
        "[train]", "steps = 10", "batch_size = 16", "eval_batches = 1",
        "[parametrization]", 'scheme = "mup"', 'optimizer = "adamw"',
        "[sweep]", "width = 16", *sweep,
        "[sweep.space]", f"lr = {lr}", ""])


def write_tiny_mlp(folder: Path, name: str = "tiny", **kwargs) -> Path:
    """Writes :func:`tiny_mlp_toml` (same arguments) to ``folder/<name>.toml`` and returns the path.

        >>> path = write_tiny_mlp(tmp_path)
        >>> load_config(path).name
    """
    path = Path(folder) / f"{name}.toml"
    path.write_text(tiny_mlp_toml(name, **kwargs))
    return path


def run_command(module, name: str, *argv: str) -> int:
    """Runs the CLI subcommand ``name`` that ``module`` registers, as ``mutransfer name *argv`` would.

        >>> from mutransfer.commands import validate as validate_cmd
        >>> run_command(validate_cmd, "validate", "x.toml", "--check")
    """
    parser = argparse.ArgumentParser()
    module.register(parser.add_subparsers())
    args = parser.parse_args([name, *argv])
    return args.func(args)


# the folder the tokens quickstart's first command prepares; the README's recipes read it
QUICKSTART_TOKENS = Path("reports/tokens-quickstart/data")


def tiny_tokens(folder: Path, vocab: int = 300, files: int = 12) -> dict:
    """A prepared token folder, as `mutransfer data prepare --stdlib --train-tokenizer N` writes
    it, in small: a ``vocab``-token BPE trained on the first ``files`` stdlib .py files (~100 KB,
    offline, about a second); returns its meta.

        >>> meta = tiny_tokens(tmp_path / QUICKSTART_TOKENS)
    """
    from mutransfer.training.data import prepare_tokens, stdlib_files

    return prepare_tokens([str(f) for f in stdlib_files()[:files]], folder, train_tokenizer=vocab,
                          progress=False)


def tiny_depth_gpt(name: str, **overrides):
    """The zoo GPT of sweeps/gpt-cpu.toml at toy sizes for depth tests: width 16, 4 steps of batch 4
    x 16 bytes, a 3-lr grid; ``overrides`` (config keys such as ``model.depth``) on top.

        >>> cfg = tiny_depth_gpt("d", **{"model.depth": 4, "model.base_depth": 1})
    """
    from mutransfer.runs import load_config

    base = {"name": name, "model.kwargs": {"seq_len": 16}, "model.width": 16, "model.base_width": 16,
            "sweep.width": 16, "train.steps": 4, "train.seq_len": 16, "train.batch_size": 4, "train.eval_every": 4,
            "train.eval_batches": 1, "sweep.sampler": "grid", "sweep.trials": 3, "sweep.pruner": "none",
            "sweep.space": {"lr": [1e-3, 4e-3, 1.6e-2]}}
    return load_config("sweeps/gpt-cpu.toml", {**base, **overrides})

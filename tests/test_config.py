"""TOML experiment configs: the shipped files load, round-trip, and bad input names file+key."""
from __future__ import annotations

from pathlib import Path

import pytest

from mutransfer.runs import ExperimentConfig, load_config

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"

MINIMAL = """
name = "tiny"
[model]
factory = "mutransfer.zoo:mlp"
[data]
source = "synthetic"
[train]
steps = 10
[parametrization]
[sweep]
[sweep.space]
lr = { low = 1e-3, high = 1e-1, log = true }
"""


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "x.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", sorted(p.stem for p in SWEEPS.glob("*.toml")))
def test_shipped_configs_load_and_round_trip(name, tmp_path):
    import tomllib

    # a token corpus is prepared by its first command (mutransfer data prepare): stand in a folder
    raw = tomllib.loads((SWEEPS / f"{name}.toml").read_text())
    tokens = raw.get("data", {}).get("source") == "tokens"
    cfg = load_config(SWEEPS / f"{name}.toml", {"data.path": str(tmp_path)} if tokens else None)
    assert cfg.name == name
    assert "lr" in cfg.sweep.space
    assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg


def test_defaults_and_types(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL))
    assert cfg.train.steps == 10 and cfg.train.betas == (0.9, 0.95)
    assert cfg.sweep.storage is None and cfg.parametrization.scheme == "spectral"  # the measured default
    assert isinstance(cfg.train.lr, float)


def test_overrides_apply_and_validate(tmp_path):
    path = write(tmp_path, MINIMAL)
    cfg = load_config(path, {"sweep.width": 16, "sweep.trials": 3})
    assert (cfg.sweep.width, cfg.sweep.trials) == (16, 3)
    assert cfg.override({"train.steps": 5}).train.steps == 5
    with pytest.raises(ValueError, match=r"\[sweep\] width must be an int, got 'big'"):
        cfg.override({"sweep.width": "big"})


def test_data_path_is_relative_to_the_config(tmp_path):
    (tmp_path / "corpus.txt").write_text("hello world " * 100)
    cfg = load_config(write(tmp_path, MINIMAL.replace('source = "synthetic"', 'path = "corpus.txt"')))
    assert cfg.data.source == "textfile"
    assert Path(cfg.data.path) == (tmp_path / "corpus.txt").resolve()


@pytest.mark.parametrize("old, new, message", [
    ("steps = 10", "steps = 'ten'", r"x\.toml: \[train\] steps must be an int, got 'ten'"),
    ("steps = 10", "steps = 10\nstepz = 3", r"x\.toml: unknown key 'stepz' in \[train\]; allowed keys: steps"),
    ('source = "synthetic"', 'source = "imagenet"', r"\[data\] source must be one of pycorpus, textfile, synthetic, tokens, hf, got 'imagenet'"),
    ("[parametrization]", "[parametrization]\nscheme = 'ntk'", r"\[parametrization\] scheme must be one of sp, mup, spectral"),
    ("[sweep]", "[sweep]\npruner = 'asha'", r"\[sweep\] pruner must be one of median, hyperband, none"),
    ("[sweep]", "[sweep]\nwidth = 0", r"\[sweep\] width must be >= 1, got 0"),
    ("log = true }", "log = true }\nmomentm = [0.9]", r"\[sweep.space\] momentm: unknown knob; sweepable: lr"),
    ("log = true }", "log = true }\nbatch_size = [8.5]", r"\[sweep.space\] batch_size must be a non-empty list of ints"),
    ("low = 1e-3", "low = 0.0", r"need 0 < low < high for log = true"),
    ("lr = {", "lr = 3\nx = {", r"\[sweep.space\] lr must be \{low"),
    ("[sweep]", "[sweep]\nsampler = 'grid'", r"sampler = 'grid' needs every \[sweep.space\] entry to be a list"),
    ('name = "tiny"', "name = 3", r"name must be a non-empty string"),
    ("[train]", "[train]\nbetas = [0.9]", r"\[train\] betas must be a list of 2 numbers"),
    ('source = "synthetic"', 'path = "missing.txt"', r"\[data\] path 'missing.txt' not found"),
])
def test_bad_config_names_file_key_and_form(tmp_path, old, new, message):
    assert old in MINIMAL
    with pytest.raises(ValueError, match=message):
        load_config(write(tmp_path, MINIMAL.replace(old, new, 1)))


@pytest.mark.parametrize("knob, spec, message", [
    ("lr", "{ low = 0, high = 0.1 }", r"\[sweep.space\] lr: every value must be > 0, got 0"),
    ("lr", "[0.01, -0.1]", r"\[sweep.space\] lr: every value must be > 0, got -0.1; e\.g\. lr = \{low"),
    ("batch_size", "[0, 16]", r"\[sweep.space\] batch_size: every value must be >= 1, got 0"),
    ("weight_decay", "{ low = -0.1, high = 0.1 }", r"weight_decay: every value must be >= 0, got -0.1"),
    ("warmup", "[-1, 0.05]", r"warmup: every value must be >= 0, got -1"),
    ("momentum", "[0.9, 1.0]", r"momentum: every value must be in \[0, 1\), got 1.0"),
    ("adam_lr", "{ low = 1e-3, high = 1e-3 }", r"adam_lr: need 0 < low < high .* empty range"),
    ("init_input", "[1.0, 0.0]", r"init_input: 0.0 cannot be trained with: constant init_input must be > 0"),
    ("readout_exponent", "[-1.0, 1.0]", r"readout_exponent: 1.0 cannot be trained with: readout_exponent must lie in \[-2, 0\]"),
])
def test_a_space_no_trial_could_run_is_refused_at_load(tmp_path, knob, spec, message):
    """Refused by load_config, naming the key and the allowed form, not when a trial samples it."""
    text = MINIMAL.replace("log = true }", f"log = true }}\n{knob} = {spec}", 1) if knob != "lr" else \
        MINIMAL.replace("lr = { low = 1e-3, high = 1e-1, log = true }", f"lr = {spec}")
    with pytest.raises(ValueError, match=message):
        load_config(write(tmp_path, text))


def test_a_section_of_defaults_may_be_left_out(tmp_path):
    """Every field of [model], [data], [train], [parametrization] and [sweep] has a default."""
    cfg = load_config(write(tmp_path, 'name = "bare"\n[sweep.space]\nlr = [1e-3, 1e-2]\n'))
    assert cfg.parametrization == ExperimentConfig.from_dict({"name": "x", "sweep": {"space": {"lr": [1e-3]}}}).parametrization
    assert cfg.model.factory == "mutransfer.zoo:gpt" and cfg.train.steps == 100
    text = MINIMAL.replace("[parametrization]\n", "")
    assert load_config(write(tmp_path, text)).parametrization.scheme == "spectral"


def test_grid_larger_than_trials_is_rejected(tmp_path):
    text = MINIMAL.replace("[sweep]", "[sweep]\nsampler = 'grid'\ntrials = 5").replace(
        "lr = { low = 1e-3, high = 1e-1, log = true }", "lr = [1e-3, 1e-2]")
    with pytest.raises(ValueError, match=r"trials = 5 exceeds the grid's 2 points; set trials <= 2"):
        load_config(write(tmp_path, text))


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(FileNotFoundError, match="sweeps/quickstart.toml"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ValueError, match=r"x\.toml: not valid TOML"):
        load_config(write(tmp_path, "name = "))

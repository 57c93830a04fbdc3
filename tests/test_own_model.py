"""Bringing your own model file: a factory file imports its sibling modules, and a trial that raises
leaves its exception in the trial and in the sweep's tables."""
from __future__ import annotations

import pytest
from tiny import run_command

from mutransfer.models import zoo
from mutransfer.cli import describe as describe_cmd
from mutransfer.runs import load_config
from mutransfer.tuning._storage import default_storage
from mutransfer.tuning._sweep import sweep
from mutransfer.validation import write_sweep_report

from test_sweep import MLP, TINY  # noqa: E402

MODELS = """import torch
from torch import nn


class LlamaLike(nn.Module):
    def __init__(self, width, in_dim=8, out_dim=4):
        super().__init__()
        self.up = nn.Linear(in_dim, width)
        self.scale = nn.Parameter(torch.ones(width))
        self.down = nn.Linear(width, out_dim)

    def forward(self, x):
        return self.down(torch.relu(self.up(x)) * self.scale)
"""
MYMODEL = """from models import LlamaLike


def make(width, in_dim=8, out_dim=4):
    return LlamaLike(width, in_dim, out_dim)


def broken(width, in_dim=8, out_dim=4):
    raise RuntimeError(f"no model at width {width}")
"""


@pytest.fixture
def model_file(tmp_path, monkeypatch):
    folder = tmp_path / "user_project"
    folder.mkdir()
    (folder / "models.py").write_text(MODELS)
    (folder / "mymodel.py").write_text(MYMODEL)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", list(__import__("sys").path))  # undo the folder's insertion
    monkeypatch.delitem(__import__("sys").modules, "models", raising=False)
    return "user_project/mymodel.py"


def test_a_factory_file_imports_its_sibling_module(model_file, capsys):
    factory = zoo.load_factory(f"{model_file}:make")
    assert type(factory(width=16)).__name__ == "LlamaLike"
    assert run_command(describe_cmd, "describe", f"{model_file}:make", "--width", "64",
                       "--base-width", "16") == 0
    out = capsys.readouterr().out
    assert "source" in out and "up.weight" in out


def test_a_sibling_named_like_a_standard_module_shadows_nothing(model_file, tmp_path):
    """A json.py (already imported) and a colorsys.py (not yet) beside the factory: the factory
    still imports its own sibling, and the process keeps the standard modules."""
    import importlib
    import json
    import sys

    folder = tmp_path / "user_project"
    (folder / "json.py").write_text("raise ImportError('the user json.py was imported')\n")
    (folder / "colorsys.py").write_text("raise ImportError('the user colorsys.py was imported')\n")
    sys.modules.pop("colorsys", None)
    factory = zoo.load_factory(f"{model_file}:make")
    assert type(factory(width=16)).__name__ == "LlamaLike"
    assert sys.path[-1] == str(folder.resolve()) and str(folder.resolve()) not in sys.path[:-1]
    assert importlib.import_module("json") is json and json.dumps({"a": 1}) == '{"a": 1}'
    assert importlib.import_module("colorsys").__file__ != str(folder / "colorsys.py")


def test_a_trial_that_raises_records_its_exception(model_file, tmp_path, capsys):
    import optuna

    cfg = load_config(MLP, {**TINY, "model.factory": f"{model_file}:broken", "model.kwargs": {},
                            "sweep.trials": 1})
    with pytest.raises(RuntimeError, match="no model at width 16"):
        sweep(cfg, trials=1, device="cpu", show_progress=True, reports_dir=tmp_path / "reports")
    study = optuna.load_study(study_name="mlp-synthetic-w16",
                              storage=default_storage(cfg, tmp_path / "reports"))
    (trial,) = study.trials
    assert trial.state.name == "FAIL"
    assert trial.user_attrs["error"] == "RuntimeError: no model at width 16"
    write_sweep_report(study, tmp_path / "reports" / "mlp-synthetic" / "mlp-synthetic-w16", show=True)
    out = capsys.readouterr().out
    assert "failed trials (1):" in out and "RuntimeError: no model at width 16" in out
    csv = (tmp_path / "reports" / "mlp-synthetic" / "mlp-synthetic-w16" / "trials.csv").read_text()
    assert "user_attrs_error" in csv and "RuntimeError: no model at width 16" in csv


def test_a_trial_traces_roles_on_a_batch_of_the_configs_data(model_file, monkeypatch):
    """A user factory has no example_input(): the trial traces it on the config's own data, so the
    gain `scale` (multiplied elementwise) gets its role from usage, not from its shape alone."""
    import importlib

    from mutransfer.runs import run_trial

    module = importlib.import_module("mutransfer.runs._trial")
    real, plans = module.parametrize, []
    monkeypatch.setattr(module, "parametrize", lambda *a, **k: plans.append(real(*a, **k)) or plans[-1])
    cfg = load_config(MLP, {**TINY, "model.factory": f"{model_file}:make", "model.kwargs": {}})
    run_trial(cfg, {"lr": 1e-3, "batch_size": 16}, width=32, device="cpu", seed=0)
    assert plans[0].shape_only == []
    assert {n: p.source for n, p in plans[0].params.items()}["scale"] == "usage"

"""mutransfer.pipeline: sweep -> transfer -> train target in one call, on the tiny MLP."""
from __future__ import annotations

import json

import pytest

import mutransfer
from mutransfer import PipelineResult, TransferPlan, load_config, pipeline
from tiny import write_tiny_mlp

LRS = [0.001, 0.003, 0.01, 0.03]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipe")
    path = write_tiny_mlp(folder, "pipe", trials=len(LRS), lrs=LRS, sampler="grid", pruner="none")
    return load_config(path), folder / "reports"


@pytest.fixture(scope="module")
def ran(tiny):
    cfg, reports = tiny
    return pipeline(cfg, device="cpu", reports_dir=reports, seeds=2, show_progress=False, progress=False)


def test_pipeline_returns_the_study_the_plan_and_the_target_and_writes_plan_json(tiny, ran):
    cfg, reports = tiny
    assert mutransfer.pipeline is pipeline and isinstance(ran, PipelineResult)
    assert ran.study.study_name == "pipe-w16" and len(ran.study.trials) == len(LRS)
    assert isinstance(ran.plan, TransferPlan) and ran.plan.target_width == cfg.model.width == 64
    assert ran.seeds == (0, 1) and len(ran.targets) == 2 and ran.target is ran.targets[0]
    assert all(r.steps == cfg.train.steps or r.diverged for r in ran.targets) and len(ran.losses) == 2
    assert ran.plan_json == reports / "pipe" / "plan.json"
    assert json.loads(ran.plan_json.read_text())["lr"] == pytest.approx(ran.plan.lr)


def test_given_trials_skip_the_sweep_and_plan_changes_reach_the_target(tiny, ran):
    cfg, reports = tiny
    again = pipeline(cfg, 32, trials=ran.study, device="cpu", reports_dir=reports, progress=False,
                     write_plan=False, plan_changes={"batch_size": 8})
    assert again.study is ran.study and len(ran.study.trials) == len(LRS), "no new trial"
    assert again.plan.target_width == 32 and again.plan.batch_size == 8 and again.plan_json is None


@pytest.mark.parametrize("kwargs, message", [
    ({"target_width": 0}, "target_width must be a positive int"),
    ({"seeds": [-1]}, "seeds must be non-negative ints"),
    ({"plan_changes": {"nope": 1}}, "plan_changes must map TransferPlan fields"),
])
def test_bad_arguments_name_the_fix(tiny, ran, kwargs, message):
    cfg, reports = tiny
    with pytest.raises(ValueError, match=message):
        pipeline(cfg, trials=ran.study, device="cpu", reports_dir=reports, progress=False,
                 write_plan=False, **kwargs)

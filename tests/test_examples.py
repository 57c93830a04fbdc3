"""parametrize never guesses a role silently: without example= it builds an input from the model
and traces it, and what still rests on a shape that reads two ways is refused with the fix."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from mutransfer import parametrize
from mutransfer.core._examples import candidate_examples
from mutransfer.core._roles import RoleWarning, find_example, infer_roles

VOCAB, SEQ = 32, 12


class BarePositional(nn.Module):
    """An embedding, a bare (seq, width) positional table and a Linear readout; no example_input."""

    def __init__(self, width: int):
        super().__init__()
        self.tok = nn.Embedding(VOCAB, width)
        self.pos = nn.Parameter(torch.randn(SEQ, width) * 0.02)
        self.mlp = nn.Linear(width, width)
        self.head = nn.Linear(width, VOCAB)

    def forward(self, ids):
        h = self.tok(ids) + self.pos[: ids.shape[1]]
        return self.head(h + torch.relu(self.mlp(h)))


class LensUnembed(nn.Module):
    """TransformerLens style: the unembedding a bare (width, vocab) Parameter used as x @ W_U."""

    def __init__(self, width: int):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.W_U = nn.Parameter(torch.randn(width, VOCAB) / width ** 0.5)
        self.b_U = nn.Parameter(torch.zeros(VOCAB))

    def forward(self, ids):
        return self.embed(ids) @ self.W_U + self.b_U


class ViTStyle(nn.Module):
    """A patch conv, a bare cls token and a bare (1, patches + 1, width) position table that only
    fits 6x6 patches of 4 pixels, i.e. 24x24 images (no default size)."""

    def __init__(self, width: int):
        super().__init__()
        self.patch = nn.Conv2d(3, width, kernel_size=4, stride=4)
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.pos = nn.Parameter(torch.randn(1, 37, width) * 0.02)
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        h = self.patch(x).flatten(2).transpose(1, 2)
        h = torch.cat([self.cls.expand(x.shape[0], -1, -1), h], dim=1) + self.pos
        return self.head(h[:, 0])


class NoInputModule(nn.Module):
    """Every weight a bare Parameter (no Embedding, Linear or conv to build an input from)."""

    def __init__(self, width: int):
        super().__init__()
        self.W_E = nn.Parameter(torch.randn(VOCAB, width) * 0.02)
        self.W_U = nn.Parameter(torch.randn(width, VOCAB) / width ** 0.5)

    def forward(self, ids):
        return self.W_E[ids] @ self.W_U


@pytest.mark.parametrize("make, roles, built", [
    (BarePositional, {"pos": "input", "head.weight": "output"},
     "built: token ids (2, 8) in [0, 32) for the first nn.Embedding 'tok'"),
    (LensUnembed, {"W_U": "output", "b_U": "fixed", "embed.weight": "input"},
     "built: token ids (2, 8) in [0, 32) for the first nn.Embedding 'embed'"),
    (ViTStyle, {"pos": "input", "cls": "vector", "patch.weight": "input"},
     "built: (2, 3, 24, 24) zeros for the first nn.Conv2d 'patch'"),
])
def test_without_an_example_the_model_is_traced_on_an_input_built_from_it(make, roles, built):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RoleWarning, no fallback
        plan = parametrize(make, width=64, base_width=16, optimizer="muon")
    assert {n: plan.params[n].role for n in roles} == roles
    assert plan.shape_only == [] and plan.traced_on == built
    assert f"roles traced on: {built}" in str(plan)
    for name in roles:
        if plan.params[name].source != "module":
            assert plan.params[name].source == "usage" and plan.params[name].optimizer == "adamw"


def test_the_instance_form_traces_too_and_the_plan_saves_how(tmp_path):
    plan = parametrize(BarePositional(64), BarePositional(16))
    assert plan.params["pos"].role == "input" and plan.traced_on.startswith("built: token ids")
    plan.save(tmp_path / "plan.json")
    from mutransfer import Plan
    assert Plan.load(tmp_path / "plan.json").traced_on == plan.traced_on


def test_a_given_example_is_used_as_is():
    plan = parametrize(BarePositional, width=64, base_width=16, example=torch.zeros(1, 4, dtype=torch.long))
    assert plan.traced_on == "given (example=)" and plan.params["pos"].role == "input"


def test_models_whose_roles_come_from_module_types_trace_nothing():
    plan = parametrize(lambda width: nn.Sequential(nn.Linear(8, width), nn.ReLU(), nn.Linear(width, 2)),
                       width=64, base_width=16)
    assert plan.traced_on is None and plan.shape_only == []


def test_what_no_built_input_can_trace_is_refused_with_the_readings_and_the_fix():
    with pytest.raises(ValueError) as err:
        parametrize(NoInputModule, width=64, base_width=16)
    text = str(err.value)
    assert "cannot tell the role of 2 parameter(s) from shape alone" in text
    assert "W_E (32, 64), only dim 1 growing with width, reads as an input" in text
    assert "W_U (64, 32), only dim 0 growing with width" in text and "its shape alone says input" in text
    assert "no input could be built: the model has no nn.Embedding, nn.Linear or conv" in text
    assert "Pass example=" in text and "overrides={'W_E': 'input'}" in text and "allow_shape_roles=True" in text
    traced = parametrize(NoInputModule, width=64, base_width=16, example=torch.zeros(2, 4, dtype=torch.long))
    assert (traced.params["W_E"].role, traced.params["W_U"].role) == ("input", "output")
    fixed = parametrize(NoInputModule, width=64, base_width=16, overrides={"W_E": "input", "W_U": "output"})
    assert fixed.params["W_U"].source == "override"


def test_allow_shape_roles_keeps_the_shape_reading_with_a_warning_naming_them():
    with pytest.warns(RoleWarning, match=r"roles of \['W_E', 'W_U'\] come from their shape alone"):
        plan = parametrize(NoInputModule, width=64, base_width=16, allow_shape_roles=True)
    assert plan.shape_only == ["W_E", "W_U"]
    assert (plan.params["W_E"].role, plan.params["W_U"].role) == ("output", "input")  # the misreading


class Untraceable(BarePositional):
    def forward(self, ids):
        raise RuntimeError("needs a batch of real text")


def test_a_forward_that_refuses_every_built_input_is_named_in_the_error():
    with pytest.raises(ValueError, match=r"pos \(12, 64\).*Tracing: no built input ran the forward \(\d+ tried; "
                                         r"the last, .*RuntimeError: needs a batch of real text"):
        infer_roles(Untraceable(64), Untraceable(16))


def test_candidates_follow_the_input_modules_and_the_bare_tables_sizes():
    model = ViTStyle(16)
    sizes = [tuple(x.shape) for x, _ in candidate_examples(model, lengths=[37])]
    assert sizes[0] == (2, 3, 24, 24)  # sqrt(37 - 1) = 6 patches of stride 4
    tokens = [tuple(x.shape) for x, _ in candidate_examples(BarePositional(16), lengths=[12, 32])]
    assert tokens[:3] == [(2, 8), (2, 12), (2, 32)]
    assert find_example(BarePositional(64), BarePositional(16))[1].startswith("built: token ids (2, 8)")

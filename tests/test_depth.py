"""Depth transfer (scaling.md section 9): blocks matched against a shallower base, the residual
branch multiplier at forward time, the depth rules, the round trips, and the depth checks."""
from __future__ import annotations

import copy
import functools
import math

import pandas as pd
import pytest
import torch
from torch import nn

from mutransfer import Plan, parametrize, zoo
from mutransfer.core._depth import ResidualScale, match_depth
from mutransfer.core._scaling import depth_multipliers

GPT = functools.partial(zoo.gpt, seq_len=16)
IDS = torch.arange(32).reshape(2, 16) % 256


def test_blocks_are_matched_by_name_with_the_index_taken_out():
    depth = match_depth(GPT(width=32, depth=8), GPT(width=16, depth=2))
    assert (depth.containers, depth.depth, depth.base_depth, depth.ratio) == (("blocks",), 8, 2, 4.0)
    assert depth.base_name("blocks.5.attn.q.weight") == "blocks.1.attn.q.weight"
    assert depth.base_name("wte.weight") == "wte.weight" and depth.block_of("ln_f.weight") is None
    assert depth.model_names("blocks.1.mlp.2") == ["blocks.1.mlp.2", "blocks.3.mlp.2", "blocks.5.mlp.2",
                                                   "blocks.7.mlp.2"]
    assert match_depth(GPT(width=32, depth=2), GPT(width=16, depth=2)) is None


def test_a_depth_that_does_not_divide_is_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"the model has 6 blocks in \['blocks'\] and the base 4: the base's "
                                         r"depth must divide the model's .* e\.g\. 3"):
        parametrize(GPT, width=32, base_width=16, depth=6, base_depth=4)


class Mixed(nn.Module):
    """Blocks of two types, alternating: [Lin, Act, Lin, Act, ...]; the base repeats the pattern."""

    def __init__(self, width: int, depth: int, first: str = "lin"):
        super().__init__()
        kinds = [first if i % 2 == 0 else ("act" if first == "lin" else "lin") for i in range(depth)]
        self.emb = nn.Embedding(16, width)
        self.blocks = nn.ModuleList(nn.Linear(width, width) if k == "lin" else nn.LayerNorm(width) for k in kinds)
        self.out = nn.Linear(width, 16)

    def forward(self, ids):
        h = self.emb(ids)
        for b in self.blocks:
            h = h + b(h)
        return self.out(h)


def test_blocks_of_another_type_are_named_in_the_error():
    ok = parametrize(Mixed(32, 4), Mixed(16, 2))  # the period-2 pattern repeats
    assert ok.depth_ratio == 2.0 and ok.params["blocks.3.weight"].role == "vector"
    with pytest.raises(ValueError, match=r"parameter 'blocks.0.weight' has shape \(32, 32\) in the model but "
                                         r"\(16,\) in the base.*block i against the base's block i mod 2"):
        parametrize(Mixed(32, 4), Mixed(16, 2, first="act"))


def _same_tensors(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_at_the_base_depth_the_model_and_optimizer_are_the_width_only_plan_bit_for_bit():
    torch.manual_seed(0)
    with_depth = parametrize(GPT, width=64, base_width=32, depth=2, base_depth=2)
    torch.manual_seed(0)
    width_only = parametrize(functools.partial(GPT, depth=2), width=64, base_width=32)
    assert _same_tensors(with_depth.model, width_only.model)
    assert with_depth.table().equals(width_only.table()) and with_depth.residual_scales == {}
    groups = [[(g["lr"], g.get("eps"), g["weight_decay"], len(g["params"])) for g in p.optimizer(1e-3).param_groups]
              for p in (with_depth, width_only)]
    assert groups[0] == groups[1]
    assert torch.equal(with_depth.model(IDS), width_only.model(IDS))


def test_the_branch_multiplier_scales_each_residual_branch_in_the_forward_pass():
    plan = parametrize(GPT, width=32, base_width=16, depth=8, base_depth=2, depth_alpha=1.0)
    ends = [f"blocks.{i}.{m}" for i in range(8) for m in ("attn.o", "mlp.2")]
    assert plan.residual_scales == {e: 0.25 for e in ends}
    manual = copy.deepcopy(plan.model)
    modules = dict(manual.named_modules())
    with torch.no_grad():
        for name in ends:
            hooks = modules[name]._forward_hooks
            for key in [k for k, h in hooks.items() if isinstance(h, ResidualScale)]:
                del hooks[key]
            modules[name].weight.mul_(0.25)  # a linear branch end: scaling W and b scales its output
            modules[name].bias.mul_(0.25)
    assert torch.allclose(plan.model(IDS), manual(IDS), atol=1e-5)
    again = parametrize(plan.model, GPT(width=16, depth=2), depth_alpha=1.0)  # parametrizing twice
    assert sum(isinstance(h, ResidualScale) for m in plan.model.modules() for h in m._forward_hooks.values()) == 16
    assert again.residual_scales == plan.residual_scales


@pytest.mark.parametrize("optimizer, alpha, lr", [
    ("adamw", 1.0, 1.0), ("adamw", 0.5, 0.5), ("adamw", 0.0, 1.0),
    ("sgd", 1.0, 4.0), ("sgd", 0.5, 1.0), ("muon", 1.0, 1.0), ("muon", 0.5, 0.5),
])
def test_the_depth_rules_act_inside_the_blocks_only(optimizer, alpha, lr):
    """m_L = 4: lr x m_L^(alpha - 1) (SGD: m_L^(2 alpha - 1)), Adam eps x m_L^-alpha for every
    Adam-updated block parameter (Muon's vectors too); init and lr x wd unchanged."""
    deep = parametrize(GPT, width=32, base_width=16, depth=8, base_depth=2, depth_alpha=alpha, optimizer=optimizer)
    flat = parametrize(functools.partial(GPT, depth=8), width=32, base_width=16, optimizer=optimizer)
    for name in ("blocks.5.attn.q.weight", "blocks.3.ln1.weight", "wte.weight", "ln_f.weight", "readout.weight"):
        d, f = deep.params[name], flat.params[name]
        inside = name.startswith("blocks.")
        assert d.depth_mult == (lr if inside else 1.0)
        assert d.lr_mult == pytest.approx(f.lr_mult * d.depth_mult)
        want_eps = 4.0 ** -alpha if inside and d.optimizer in ("adamw", "adam") else 1.0
        assert d.eps_mult == pytest.approx(f.eps_mult * want_eps)
        assert d.wd_mult == pytest.approx(1 / d.lr_mult) and d.init_std == pytest.approx(f.init_std)
    assert bool(deep.residual_scales) == (alpha > 0)
    assert depth_multipliers(4.0, alpha, "adamw").branch == 4.0 ** -alpha


def test_depth_is_in_the_plan_its_table_its_print_and_its_json(tmp_path):
    plan = parametrize(GPT, width=32, base_width=16, depth=4, base_depth=2, depth_alpha=0.5, optimizer="muon")
    assert (plan.depth, plan.base_depth, plan.depth_alpha, plan.depth_ratio) == (4, 2, 0.5, 2.0)
    assert "depth_mult" in plan.table().columns
    text = str(plan)
    assert "depth: 4 blocks on a base of 2 (m_L = 2), depth_alpha=0.5" in text
    assert "residual branch multiplier on 'blocks.3.mlp.2': x0.7071" in text
    plan.save(tmp_path / "plan.json")
    loaded = Plan.load(tmp_path / "plan.json")
    assert (loaded.depth, loaded.base_depth, loaded.depth_alpha) == (4, 2, 0.5)
    assert loaded.residual_scales == plan.residual_scales
    fresh = copy.deepcopy(plan.model)
    for m in fresh.modules():
        m._forward_hooks.clear()
    assert not torch.allclose(fresh(IDS), plan.model(IDS))
    loaded.apply_(fresh)  # a loaded plan re-registers the branch multipliers
    assert torch.allclose(fresh(IDS), plan.model(IDS))
    with pytest.raises(ValueError, match="model lacks parameters .*blocks.2.attn"):
        loaded.apply_(GPT(width=32, depth=2))


def test_the_multiplier_survives_torch_compile():
    plan = parametrize(GPT, width=32, base_width=16, depth=4, base_depth=2)
    eager = plan.model(IDS)
    compiled = torch.compile(plan.model, backend="eager")  # dynamo traces the module hooks
    assert torch.allclose(compiled(IDS), eager, atol=1e-6)


def test_factories_must_take_depth_and_instances_read_it_from_the_blocks():
    with pytest.raises(TypeError, match="needs a factory that accepts the keyword 'depth'"):
        parametrize(lambda width: zoo.mlp(width), width=32, base_width=16, depth=4)
    with pytest.raises(TypeError, match="depth= and base_depth= belong to the factory form"):
        parametrize(GPT(width=32, depth=4), GPT(width=16, depth=2), depth=4)
    with pytest.raises(ValueError, match="depth_alpha must be a number in \\[0, 1\\]"):
        parametrize(GPT, width=32, base_width=16, depth=4, base_depth=2, depth_alpha=2)


def test_hf_family_scales_depth_and_causal_lm_finds_llama_branches():
    pytest.importorskip("transformers")
    from transformers import LlamaConfig

    from mutransfer.hf import causal_lm, family

    cfg = LlamaConfig(hidden_size=64, num_attention_heads=4, num_hidden_layers=2, intermediate_size=128)
    assert family(cfg, 128, depth=8).num_hidden_layers == 8 and family(cfg, 128).num_hidden_layers == 2
    make = functools.partial(causal_lm, model_type="llama", base_width=32, head_dim=16)
    plan = parametrize(make, width=64, base_width=32, depth=4, base_depth=2)
    assert sorted({n.split(".", 4)[-1] for n in plan.residual_scales}) == ["mlp.down_proj", "self_attn.o_proj"]
    assert len(plan.residual_scales) == 8 and plan.depth_ratio == 2.0


def test_the_depth_coordinate_check_passes_depth_rules_and_fails_width_only_muP():
    from mutransfer.data import pycorpus
    from mutransfer.validation._depth import depth_coord_check, depth_verdict

    data = pycorpus()
    gen = torch.Generator().manual_seed(0)
    batches = [data.batch("train", 4, 16, gen) for _ in range(3)]
    df = depth_coord_check(functools.partial(GPT, width=32), [2, 4, 8], batches, lr=3e-3,
                           depth_alphas=(0.0, 0.5, 1.0), steps=3, seeds=(0,), loss_fn=data.loss)
    verdict = depth_verdict(df)
    assert verdict.alphas == {0.0: False, 0.5: True, 1.0: True}
    slopes = verdict.slopes.set_index(["depth_alpha", "module", "kind", "step"])["slope"]
    assert slopes[(0.0, "stream", "delta", 1)] > 0.4  # width-only: the blocks' updates add up
    assert abs(slopes[(1.0, "branch", "delta", 3)]) < 0.15  # CompleteP: every block keeps learning
    assert -0.65 < slopes[(0.5, "branch", "delta", 3)] < -0.15  # depth-muP: each block learns less
    assert "depth_alpha 0 fails" in verdict.explanation() and "depth_alpha 1 passes" in verdict.explanation()
    assert "no faster than its lr rule m_L^(0.5 - 1)" in verdict.explanation()


def test_the_depth_verdict_fails_a_block_that_shrinks_faster_than_its_rule():
    from mutransfer.validation._depth import branch_bounds, depth_verdict

    assert branch_bounds(1.0) == (-0.15, 0.15) and branch_bounds(0.0) == (-0.15, 0.15)
    rows = [{"depth_alpha": 0.5, "depth": d, "seed": 0, "step": 1, "module": m, "kind": "delta",
             "rms": {"stream": 1.0, "branch": d ** -0.9}[m]} for d in (2, 4, 8) for m in ("stream", "branch")]
    verdict = depth_verdict(pd.DataFrame(rows))
    assert verdict.alphas == {0.5: False}
    assert "-0.90 (branch delta step 1)" in verdict.explanation()


def test_a_sweep_config_carries_depth_to_the_trial_the_transfer_and_the_target(tmp_path):
    from mutransfer import load_config, transfer
    from mutransfer.projection import train_target
    from mutransfer.tuning import sweep

    from tiny import tiny_depth_gpt

    cfg = tiny_depth_gpt("tiny-depth", **{"model.depth": 4, "model.base_depth": 2, "model.width": 32,
                                          "sweep.storage": f"sqlite:///{tmp_path}/s.db",
                                          "parametrization.depth_alpha": 0.5})
    assert cfg.proxy_depth() == 2
    study = sweep(cfg, device="cpu", show_progress=False, reports_dir=tmp_path)
    assert {t.user_attrs["depth"] for t in study.trials} == {2}
    plan = transfer(study, 32, target_depth=4)
    assert (plan.target_depth, plan.base_depth, plan.depth_alpha) == (4, 2, 0.5)
    assert "depth 2 -> 4 (alpha 0.5)" in plan.summary()
    res = train_target(cfg, plan, device="cpu", progress=False)
    assert math.isfinite(res.final_loss)
    with pytest.raises(ValueError, match="the plan's depth_alpha is 0.5 but the config trains depth_alpha 1.0"):
        train_target(cfg.override({"parametrization.depth_alpha": 1.0}), plan, device="cpu", progress=False)
    with pytest.raises(ValueError, match=r"\[model\] depth = 4 and kwargs depth = 2: give depth in one place"):
        load_config("sweeps/gpt-cpu.toml", {"model.depth": 4, "model.kwargs": {"depth": 2}})


def _depth_fsdp(rank: int, world: int):
    """A depth plan's model sharded by FSDP2 (world 2) or not (world 1): logits and one AdamW step."""
    torch.manual_seed(0)
    plan = parametrize(GPT, width=32, base_width=16, depth=4, base_depth=2, depth_alpha=1.0, seed=0)
    model = plan.model
    if world > 1:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (world,))
        for block in model.blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
    opt = plan.optimizer(1e-3, model=model)
    logits = model(IDS)
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), IDS.flatten()).backward()
    opt.step()
    after = {n: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()
             for n, p in model.named_parameters()}
    return logits.detach(), after


def test_the_branch_multiplier_and_the_depth_rules_survive_fsdp2():
    pytest.importorskip("torch.distributed.fsdp")
    from mutransfer.bench._ranks import run_on_ranks

    one_logits, one_after = _depth_fsdp(0, 1)
    for logits, after in run_on_ranks(_depth_fsdp, 2):
        assert torch.allclose(logits, one_logits, atol=1e-5)
        assert max(float((after[n] - one_after[n]).abs().max()) for n in one_after) < 1e-5

"""The depth ablation (issue 32, item 1): the zoo GPT's block parts switch to Llama's one at a time
(norm, MLP, biases, norm gains), and the experiment measures each variant's depth landscapes and
writes the report; at toy sizes."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

import mutransfer.experiments.depth_ablation as ablation
from mutransfer.models import zoo
from mutransfer.runs import load_config


def test_the_zoo_gpt_switches_its_block_parts_to_llamas():
    llama = zoo.gpt(32, depth=2, norm="rms", mlp="swiglu", bias=False, seq_len=8)
    names = dict(llama.named_parameters())
    assert isinstance(llama.blocks[0].ln1, torch.nn.RMSNorm) and isinstance(llama.ln_f, torch.nn.RMSNorm)
    assert {"blocks.0.mlp.gate.weight", "blocks.0.mlp.up.weight", "blocks.0.mlp.down.weight"} <= set(names)
    assert not any(n.endswith(".bias") for n in names)
    fixed = zoo.gpt(32, depth=2, norm_gains=False, seq_len=8)
    assert not any("ln" in n for n, _ in fixed.named_parameters())
    assert llama(torch.zeros(2, 8, dtype=torch.long)).shape == (2, 8, 256)
    torch.manual_seed(0)
    default = zoo.gpt(32, depth=2, seq_len=8)  # GPT-2's block by default, as before
    assert [n for n, _ in default.named_parameters()][:6] == [
        "wte.weight", "wpe.weight", "blocks.0.ln1.weight", "blocks.0.ln1.bias", "blocks.0.attn.q.weight",
        "blocks.0.attn.q.bias"]
    rope = zoo.gpt(32, depth=2, positions="rotary", seq_len=8)
    assert "wpe.weight" not in dict(rope.named_parameters()) and rope.blocks[0].attn.rope
    q0, k0 = torch.randn(16), torch.randn(16)  # the same vector at every position: scores depend on t - s only
    q, k = zoo.rotary(q0.expand(1, 1, 8, 16)), zoo.rotary(k0.expand(1, 1, 8, 16))
    assert torch.allclose((q[0, 0, 3] * k[0, 0, 1]).sum(), (q[0, 0, 6] * k[0, 0, 4]).sum(), atol=1e-5)
    assert torch.allclose(zoo.rotary(q0.expand(1, 1, 1, 16))[0, 0, 0], q0)  # position 0 is not rotated
    with pytest.raises(ValueError, match="positions"):
        zoo.gpt(32, positions="alibi")
    with pytest.raises(ValueError, match="norm"):
        zoo.gpt(32, norm="batch")
    with pytest.raises(ValueError, match="mlp"):
        zoo.gpt(32, mlp="relu")
    with pytest.raises(TypeError, match="bias must be True or False"):
        zoo.gpt(32, bias=1)


def test_the_ablation_runs_each_variant_and_writes_the_report(tmp_path, monkeypatch):
    cfg = load_config("sweeps/depth-ablation.toml", {"model.width": 16, "model.base_width": 16, "model.depth": 4,
                                                     "model.base_depth": 1, "sweep.width": 16, "train.steps": 3,
                                                     "train.seq_len": 16, "train.batch_size": 4,
                                                     "train.eval_every": 3, "train.eval_batches": 1,
                                                     "model.kwargs": {"seq_len": 16},
                                                     "sweep.space": {"lr": [0.001, 0.004, 0.016]}, "sweep.trials": 3})
    path = tmp_path / "ablation.toml"
    from mutransfer.runs import to_toml
    path.write_text(to_toml(cfg.to_dict()))
    monkeypatch.setattr(ablation, "VARIANTS", {"gpt": {}, "llama-like": {"norm": "rms", "mlp": "swiglu", "bias": False}})
    monkeypatch.setattr(ablation, "DEPTHS", (1, 4))
    monkeypatch.setattr(ablation, "SEEDS", 1)
    out = tmp_path / "out"
    assert ablation.main(["run", "--config", str(path), "--out", str(out)]) == 0
    table = pd.read_csv(out / "ablation.csv")
    assert list(table.variant) == ["gpt", "llama-like"] and table.depth_alpha.eq(0.5).all()
    assert {"log2 eta* at 1", "log2 eta* at 4", "drift", "best loss at 4"} <= set(table.columns)
    text = (out / "index.md").read_text()
    assert "python -m mutransfer.experiments.depth_ablation run" in text and "norm=rms, mlp=swiglu, bias=False" in text
    assert (out / "ablation.png").stat().st_size > 5000
    with pytest.raises(ValueError, match="unknown variant 'x'"):
        ablation.variant_config(cfg, "x")


def test_the_zoo_llama_block_computes_what_the_transformers_llama_computes():
    """The ablation's zoo block with all of Llama's parts and transformers' Llama are one function: with
    the same weights their logits agree (RMSNorm's eps set equal), so a difference in depth transfer
    between them lies in the init draws, not in the forward."""
    pytest.importorskip("transformers")
    from mutransfer.models.hf import causal_lm

    torch.manual_seed(0)
    ours = zoo.gpt(32, depth=3, seq_len=16, norm="rms", mlp="swiglu", bias=False, positions="rotary", d_head=16)
    theirs = causal_lm(32, model_type="llama", depth=3, head_dim=16, seq_len=16, base_width=32,
                       rms_norm_eps=torch.finfo(torch.float32).eps)
    parts = {"ln1": "input_layernorm", "ln2": "post_attention_layernorm", "attn.q": "self_attn.q_proj",
             "attn.k": "self_attn.k_proj", "attn.v": "self_attn.v_proj", "attn.o": "self_attn.o_proj",
             "mlp.gate": "mlp.gate_proj", "mlp.up": "mlp.up_proj", "mlp.down": "mlp.down_proj"}
    top = {"wte.weight": "lm.model.embed_tokens.weight", "ln_f.weight": "lm.model.norm.weight",
           "readout.weight": "lm.lm_head.weight"}
    named = dict(theirs.named_parameters())
    assert len(named) == len(dict(ours.named_parameters()))
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if name not in top:
                _, i, rest = name.split(".", 2)
                module, leaf = rest.rsplit(".", 1)
            p.copy_(torch.randn_like(p) * 0.2 + (p.ndim == 1))
            named[top.get(name) or f"lm.model.layers.{i}.{parts[module]}.{leaf}"].copy_(p)
    ids = torch.randint(0, 256, (2, 16))
    torch.testing.assert_close(ours(ids), theirs(ids), atol=1e-4, rtol=1e-4)
    normal = zoo.gpt(64, depth=2, init="normal")
    assert abs(normal.blocks[0].attn.q.weight.std().item() - 0.02) < 0.002
    assert zoo.gpt(64, depth=2).blocks[0].attn.q.weight.abs().max().item() <= 64 ** -0.5  # torch's uniform
    with pytest.raises(ValueError, match="unknown init 'xavier'"):
        zoo.gpt(32, init="xavier")

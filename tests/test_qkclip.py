"""QK-Clip: the bound after a step, untouched heads, the exact factor, the GQA rule, logits after
RoPE in transformers' attention, bad input, and the train loop's max_logit column."""
from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import nn

import mutransfer
from mutransfer.optim._qkclip import QKClip, QKPair, gqa_factors, head_max_logits

TAU = 5.0


def _hot_gpt(width=32, depth=1, seed=0, gain=8.0):
    """A zoo GPT whose q/k weights are scaled up so its logits start far above TAU."""
    torch.manual_seed(seed)
    model = mutransfer.zoo.gpt(width, depth=depth, seq_len=16)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.q.weight.mul_(gain)
            block.attn.k.weight.mul_(gain)
    return model


def _recompute(model, ids) -> torch.Tensor:
    """Block 0's per-head max logit, computed from scratch (not through QKClip's hooks)."""
    attn = model.blocks[0].attn
    with torch.no_grad():
        x = model.wte(ids) + model.wpe(torch.arange(ids.shape[1]))
        h = model.blocks[0].ln1(x)
        b, t, _ = h.shape
        q, k = (p(h).view(b, t, attn.n_heads, attn.d_head).transpose(1, 2) for p in (attn.q, attn.k))
        scores = (q @ k.transpose(-1, -2)) * attn.scale
        scores = scores.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), -math.inf)
        return scores.amax(dim=(0, 2, 3))


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_every_head_is_at_most_tau_after_each_step(optimizer):
    plan = mutransfer.parametrize(functools.partial(_hot_gpt, depth=1), width=32, base_width=16,
                                  optimizer=optimizer)
    model = plan.model
    with torch.no_grad():  # parametrize rewrote the init; make the logits hot again
        model.blocks[0].attn.q.weight.mul_(8.0)
        model.blocks[0].attn.k.weight.mul_(8.0)
    opt = plan.optimizer(0.05)
    clip = QKClip(model, TAU)
    gen = torch.Generator().manual_seed(0)
    for step in range(3):
        ids = torch.randint(0, 256, (4, 16), generator=gen)
        if step == 0:
            assert float(_recompute(model, ids).max()) > 4 * TAU  # the clip has work to do
        model(ids).logsumexp(-1).mean().backward()
        opt.step()
        opt.zero_grad()
        clip.clip_()  # drops the pre-step record: the step's forward measured the old weights
        model(ids)  # a forward on that batch with the stepped weights, recorded ...
        clip.clip_()  # ... and clipped
        assert float(_recompute(model, ids).max()) <= TAU * (1 + 1e-4)


def test_a_head_under_tau_is_bit_for_bit_unchanged():
    model = _hot_gpt(gain=1.0)
    attn = model.blocks[0].attn
    with torch.no_grad():  # head 0 hot, the other heads as they were
        attn.q.weight[: attn.d_head].mul_(40.0)
        attn.k.weight[: attn.d_head].mul_(40.0)
    before = {n: p.detach().clone() for n, p in attn.named_parameters()}
    clip = QKClip(model, TAU)
    model(torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(1)))
    s = clip.clip_()["blocks.0.attn"]
    assert s[0] > TAU and (s[1:] < TAU).all()
    rows = slice(attn.d_head, None)
    for name in ("q.weight", "q.bias", "k.weight", "k.bias"):
        now = dict(attn.named_parameters())[name]
        assert torch.equal(now[rows], before[name][rows])  # heads 1..3: untouched
        assert not torch.equal(now[: attn.d_head], before[name][: attn.d_head])  # head 0: clipped


def _pair(n_heads, n_kv_heads, head_dim, width, causal=False):
    q = nn.Linear(width, n_heads * head_dim, bias=False)
    k = nn.Linear(width, n_kv_heads * head_dim, bias=False)
    return QKPair("attn", q, k, n_heads, n_kv_heads, head_dim, scale=1.0, causal=causal)


class _Explicit(nn.Module):
    """q and k of one token stream, with no attention module QKClip would recognise."""

    def __init__(self, pair):
        super().__init__()
        self.q, self.k = pair.q, pair.k

    def forward(self, x):
        return self.q(x).sum() + self.k(x).sum()


def test_factor_is_exactly_sqrt_tau_over_s_on_a_hand_built_case():
    pair = _pair(n_heads=2, n_kv_heads=2, head_dim=2, width=4)
    with torch.no_grad():
        pair.q.weight.copy_(torch.diag(torch.tensor([10.0, 10.0, 1.0, 1.0])))
        pair.k.weight.copy_(torch.diag(torch.tensor([10.0, 10.0, 1.0, 1.0])))
    model = _Explicit(pair)
    clip = QKClip(model, tau=50.0, pairs=[pair])
    model(torch.ones(1, 1, 4))  # q_0 = k_0 = (10, 10): S_0 = 200; head 1: S_1 = 2
    s = clip.clip_()["attn"]
    assert s.tolist() == [200.0, 2.0]
    q_f, k_f = clip.factors["attn"]
    assert q_f.tolist() == [0.5, 1.0] and k_f.tolist() == [0.5, 1.0]  # sqrt(50 / 200) = 0.5
    assert pair.q.weight.diagonal().tolist() == [5.0, 5.0, 1.0, 1.0]
    assert pair.k.weight.diagonal().tolist() == [5.0, 5.0, 1.0, 1.0]


def test_gqa_rule_key_takes_the_mildest_factor_and_query_the_rest():
    # 4 query heads share 2 key heads: group 0 = heads 0, 1; group 1 = heads 2, 3.
    s = torch.tensor([400.0, 200.0, 300.0, 50.0])
    q_f, k_f = gqa_factors(s, tau=100.0, n_kv_heads=2)
    gamma = torch.clamp(100.0 / s, max=1.0)
    torch.testing.assert_close(k_f, torch.stack([gamma[:2].max(), gamma[2:].max()]).sqrt())
    assert k_f[1] == 1.0  # head 3 is under tau, so its shared key head is not shrunk
    torch.testing.assert_close(q_f * k_f.repeat_interleave(2), gamma)  # every head's logit x gamma
    # and on weights: after the clip each head's recomputed max logit is min(S_h, tau)
    pair = _pair(n_heads=4, n_kv_heads=2, head_dim=2, width=6, causal=True)
    torch.manual_seed(0)
    with torch.no_grad():
        pair.q.weight.normal_().mul_(torch.tensor([6.0, 6.0, 3.0, 3.0, 5.0, 5.0, 0.5, 0.5])[:, None])
        pair.k.weight.normal_().mul_(4.0)
    model, x = _Explicit(pair), torch.randn(3, 8, 6)
    clip = QKClip(model, tau=10.0, pairs=[pair])
    model(x)
    before = clip.clip_()["attn"]
    model(x)
    after = clip.clip_()["attn"]
    torch.testing.assert_close(after, torch.clamp(before, max=10.0), rtol=1e-5, atol=1e-5)


def test_heads_whose_max_logit_is_zero_or_negative_are_left_alone():
    # every q . k of a head can be negative (a tiny model early on): tau / S_h < 0 must not
    # become a factor (its square root was NaN), the head is under tau and keeps its weights
    q_f, k_f = gqa_factors(torch.tensor([-0.3, 0.0, 2.0, 0.5]), tau=1.0, n_kv_heads=2)
    torch.testing.assert_close(q_f, torch.tensor([1.0, 1.0, 0.5, 1.0]))  # head 2 alone is over tau
    torch.testing.assert_close(k_f, torch.tensor([1.0, 1.0]))  # its key head is shared with head 3
    assert torch.isfinite(q_f).all() and torch.isfinite(k_f).all()


def _tiny_llama(n_kv_heads=2):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=1, num_attention_heads=4,
                                   num_key_value_heads=n_kv_heads, max_position_embeddings=32)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg)


def test_transformers_attention_is_found_and_logits_are_after_rope():
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    model = _tiny_llama()
    attn = model.model.layers[0].self_attn
    seen = {}
    attn.register_forward_pre_hook(lambda m, a, kw: seen.update(kw), with_kwargs=True)
    clip = QKClip(model, tau=None)
    assert [p.name for p in clip.pairs] == ["model.layers.0.self_attn"]
    assert (clip.pairs[0].n_heads, clip.pairs[0].n_kv_heads) == (4, 2)
    model.train()
    model(torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0)))
    recorded = clip.clip_()["model.layers.0.self_attn"]
    h, (cos, sin) = seen["hidden_states"], seen["position_embeddings"]
    with torch.no_grad():
        q = attn.q_proj(h).view(2, 12, 4, 8).transpose(1, 2)
        k = attn.k_proj(h).view(2, 12, 2, 8).transpose(1, 2)
        unrotated = head_max_logits(q, k, attn.scaling)
        rotated = head_max_logits(*apply_rotary_pos_emb(q, k, cos, sin), attn.scaling)
    torch.testing.assert_close(recorded, rotated, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(recorded, unrotated, rtol=1e-3)  # RoPE does change the logits
    clip.remove()
    assert model.config._attn_implementation == "sdpa"


def test_bad_input_names_the_fix():
    model = mutransfer.zoo.gpt(32, depth=1, seq_len=16)
    for tau in (0, -1.0, math.nan):
        with pytest.raises(ValueError, match=r"tau must be a number > 0 .* or None"):
            QKClip(model, tau)
    with pytest.raises(ValueError, match=r"no attention found in Sequential .* pass pairs="):
        QKClip(mutransfer.zoo.mlp(32), 30.0)
    pair = _pair(n_heads=3, n_kv_heads=2, head_dim=2, width=4)
    with pytest.raises(ValueError, match="n_heads a multiple of n_kv_heads"):
        QKClip(model, 30.0, pairs=[pair])


def test_train_logs_max_logit_and_clips():
    data = mutransfer.data.synthetic("regression", in_dim=4, out_dim=4)

    class Seq(nn.Module):  # the zoo GPT on synthetic ids: only the history column matters
        def __init__(self):
            super().__init__()
            self.gpt = _hot_gpt(depth=2)

        def forward(self, x):
            return self.gpt((x.abs() * 50).long().clamp(max=255)).mean(1)[:, :4]

    model = Seq()
    clip = QKClip(model, TAU)
    res = mutransfer.train(model, torch.optim.AdamW(model.parameters(), 1e-3), data, steps=4,
                           batch_size=8, seq_len=None, device="cpu")
    assert "max_logit" not in res.history  # off: the history is as before
    res = mutransfer.train(model, torch.optim.AdamW(model.parameters(), 1e-3), data, steps=4,
                           batch_size=8, seq_len=None, device="cpu", qk_clip=clip)
    logits = res.history["max_logit"]
    assert logits.iloc[0] > TAU and logits.iloc[-1] < logits.iloc[0]


def test_qk_norm_attention_refuses_to_clip_but_records():
    model = _tiny_llama()
    attn = model.model.layers[0].self_attn
    attn.q_norm = nn.RMSNorm(8)  # as Qwen3/OLMo2 do: q is normalized after q_proj
    with pytest.raises(ValueError, match=r"normalizes q/k after the projections \(q_norm\).*tau=None"):
        QKClip(model, 30.0)
    QKClip(model, None).remove()

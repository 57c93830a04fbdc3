"""QK-Clip (Kimi K2's MuonClip, scaling.md section 4): bound each attention head's max logit.

During every training forward pass each head's largest logit on the batch is recorded,

    S_h = max_{b, i, j allowed by the mask} scale * q_i . k_j      (after RoPE, if any)

and after ``optimizer.step()`` :meth:`QKClip.clip_` rescales the heads with ``S_h > tau``:
with ``gamma_h = min(1, tau / S_h)``, query head h's rows of W_q (and its bias) are multiplied by
``gamma_h / kappa_g`` and the rows of its key head g in W_k (and its bias) by ``kappa_g``, where

    kappa_g = sqrt(max_{h reads key head g} gamma_h)

**The GQA rule:** a key head shared by several query heads is shrunk only by the largest
(mildest) factor among its query heads, and each query head takes the rest of its own factor;
so every head's logits on the recorded batch scale by exactly ``gamma_h`` (``S_h -> tau`` when
clipped), no query head is shrunk more than it needs, and a group whose heads are all under tau
is left bit for bit unchanged. Without GQA (one query head per key head) this is K2's rule,
``sqrt(tau / S_h)`` on both W_q and W_k.

As in K2, ``S_h`` is measured in the step's own forward pass (before the update), so the bound is
exact for the weights that forward used; the optimizer's update then moves logits by O(lr).

Where the logits come from:
- the zoo GPT (and any module with ``q``, ``k`` Linear layers and ``n_heads``, ``d_head``,
  ``scale``): the q/k projection outputs (it has no RoPE);
- transformers' Llama-style attention (``q_proj``, ``k_proj``, ``head_dim``, ``scaling`` and a
  config with ``num_attention_heads`` / ``num_key_value_heads``): a function registered in
  transformers' ``AttentionInterface`` wrapping the model's own, so q and k are taken after RoPE;
- anything else: ``pairs=[QKPair(...)]`` naming its q and k Linear layers.

The max logit costs one extra batched matmul per layer (no grad): ``python -m mutransfer.bench
qkclip`` measures it.

Under FSDP2 (W_q, W_k row-sharded DTensors, ``Shard(0)`` on a 1-D mesh) each rank records the
logits of its own batch, so :meth:`QKClip.clip_` first takes the max over the ranks (one
all-reduce of every sharded layer's ``S_h``): every rank then clips the same heads by the same
factors, and each scales only the rows (and bias entries) it holds.

    >>> clip = QKClip(model, tau=30.0)
    >>> loss.backward(); opt.step(); clip.clip_()
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import torch
from torch import nn

from mutransfer.optim import _shards

__all__ = ["QKClip", "QKPair", "head_max_logits", "gqa_factors"]

HF_IMPLEMENTATION = "mutransfer_qkclip"
# attention module -> (recorder callback, the implementation it wraps); weak, so models can die
_HF_RECORDERS: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


@dataclass(frozen=True, eq=False)
class QKPair:
    """One attention layer for QK-Clip: its q and k Linear layers and how heads split them.

    ``q.weight`` has ``n_heads * head_dim`` rows (head h = rows ``h*head_dim:(h+1)*head_dim``),
    ``k.weight`` ``n_kv_heads * head_dim`` rows; query head h reads key head
    ``h // (n_heads // n_kv_heads)``. ``scale`` multiplies q.k; ``causal`` masks j > i.

        >>> QKPair("blocks.0.attn", attn.q, attn.k, n_heads=4, n_kv_heads=4, head_dim=16,
        ...        scale=0.25)
    """

    name: str
    q: nn.Linear
    k: nn.Linear
    n_heads: int
    n_kv_heads: int
    head_dim: int
    scale: float
    causal: bool = True
    attention: nn.Module | None = None  # set for transformers attention (logits after RoPE)


def head_max_logits(q: torch.Tensor, k: torch.Tensor, scale: float, causal: bool = True,
                    mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-head max logit ``S_h = max_{b,i,j} scale * q_i . k_j`` over the allowed (i, j).

    ``q``: (B, H, T, d); ``k``: (B, H_kv, S, d) with H a multiple of H_kv (query head h reads key
    head h // (H / H_kv)). ``mask``: boolean (True = attend) or additive float, broadcastable to
    (B, H, T, S); else ``causal`` masks j > i (aligned to the end when S > T). One batched matmul.

        >>> head_max_logits(torch.ones(1, 2, 3, 4), torch.ones(1, 1, 3, 4), scale=0.5)
        tensor([2., 2.])
    """
    with torch.no_grad():
        groups = q.shape[1] // k.shape[1]
        if groups > 1:
            k = k.repeat_interleave(groups, dim=1)
        scores = torch.matmul(q, k.transpose(-1, -2)).float() * scale
        if mask is not None:
            mask = mask[..., : scores.shape[-1]]
            scores = (scores.masked_fill(~mask, -math.inf) if mask.dtype == torch.bool
                      else scores + mask.float())
        elif causal:
            t, s = scores.shape[-2:]
            allowed = torch.ones(t, s, dtype=torch.bool, device=scores.device).tril(s - t)
            scores = scores.masked_fill(~allowed, -math.inf)
        return scores.amax(dim=(0, 2, 3))


def gqa_factors(max_logits: torch.Tensor, tau: float, n_kv_heads: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(query-head factors, key-head factors) of the GQA rule (module docstring):

        gamma_h = min(1, tau / S_h);  kappa_g = sqrt(max_{h in g} gamma_h);  q_h = gamma_h / kappa_g

    so ``q_h * kappa_g = gamma_h`` for every head h of key head g. A head whose max logit is at
    most tau (zero or negative included) is left alone: gamma_h = 1.

        >>> gqa_factors(torch.tensor([400.0, 25.0]), tau=100.0, n_kv_heads=2)
        (tensor([0.5000, 1.0000]), tensor([0.5000, 1.0000]))
    """
    gamma = tau / max_logits.double().clamp(min=tau)  # 1 at or under tau, never tau / S <= 0
    kappa = gamma.view(n_kv_heads, -1).amax(dim=1).sqrt()
    q = gamma / kappa.repeat_interleave(gamma.numel() // n_kv_heads)
    return q.float(), kappa.float()


def _scale_heads_(layer: nn.Linear, factors: torch.Tensor, head_dim: int) -> None:
    """Multiply head h's rows of the weight (and bias) by factors[h]; of a row-sharded DTensor,
    the rows this rank holds."""
    for t in (layer.weight, layer.bias):  # q = W x + b scales exactly only if its bias does too
        if t is None:
            continue
        start, count = _shards.row_range(t)
        data = _shards.local(t)
        rows = factors.to(data.device, data.dtype).repeat_interleave(head_dim)[start:start + count]
        data.mul_(rows.view(-1, *([1] * (data.ndim - 1))))


class QKClip:
    r"""Record every head's max attention logit in training forwards; clip heads over ``tau``.

    Args:
        model: the model; its attention layers are found automatically (module docstring).
        tau: the logit bound (> 0; K2 used 100, small models were lossless at 30); None only
            records (for logging) and never changes a weight.
        pairs: explicit :class:`QKPair` list for models whose attention is not recognised.

    :meth:`clip_` (call after ``optimizer.step()``) applies the GQA rule to the max over all
    training forwards since the last call, stores them in :attr:`max_logits` (layer name ->
    per-head tensor) and :attr:`factors`, and resets. Works with any optimizer (AdamW, Muon).
    :meth:`remove` detaches the hooks.

        >>> clip = QKClip(model, tau=30.0)
        >>> model(x).sum().backward(); opt.step(); clip.clip_(); clip.max_logit()
    """

    def __init__(self, model: nn.Module, tau: float | None, pairs: list[QKPair] | None = None):
        if tau is not None and (isinstance(tau, bool) or not isinstance(tau, (int, float))
                                or not math.isfinite(tau) or tau <= 0):
            raise ValueError(f"tau must be a number > 0 (K2 used 100; 30 was lossless for small "
                             f"models), or None to record max logits without clipping; got {tau!r}")
        self.tau = None if tau is None else float(tau)
        self.pairs = list(pairs) if pairs is not None else find_pairs(model)
        if not self.pairs:
            raise ValueError(f"no attention found in {type(model).__name__} (looked for modules "
                             "with q/k Linear layers and n_heads, d_head, scale, or transformers' "
                             "q_proj/k_proj attention); pass pairs=[QKPair(name, q_linear, "
                             "k_linear, n_heads, n_kv_heads, head_dim, scale)]")
        for pair in self.pairs:
            _check_pair(pair, self.tau)
        self._running: dict[str, torch.Tensor] = {}
        self.max_logits: dict[str, torch.Tensor] = {}
        self.factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._handles = [h for pair in self.pairs for h in self._attach(pair)]

    # ------------------------------------------------------------------ recording
    def _record(self, pair: QKPair, s: torch.Tensor) -> None:
        old = self._running.get(pair.name)
        self._running[pair.name] = s if old is None else torch.maximum(old, s)

    def _attach(self, pair: QKPair) -> list:
        if pair.attention is not None:
            return [_attach_hf(pair, self._record)]
        seen: dict[str, torch.Tensor] = {}

        def hook(which):
            def fn(module, args, out):
                if not module.training:
                    return
                seen[which] = out.detach()
                if len(seen) == 2:
                    q, k = seen.pop("q"), seen.pop("k")
                    b, t = q.shape[0], q.shape[-2] if q.ndim == 3 else 1
                    qh = q.view(b, t, pair.n_heads, pair.head_dim).transpose(1, 2)
                    kh = k.view(b, t, pair.n_kv_heads, pair.head_dim).transpose(1, 2)
                    self._record(pair, head_max_logits(qh, kh, pair.scale, pair.causal))
            return fn

        return [pair.q.register_forward_hook(hook("q")), pair.k.register_forward_hook(hook("k"))]

    def remove(self) -> None:
        """Detach every hook (and restore transformers' attention implementation)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # ------------------------------------------------------------------ clipping
    @torch.no_grad()
    def reduce_over_ranks_(self, group=None) -> None:
        """Make the record since the last :meth:`clip_` the max over the ranks of ``group``
        (default: every rank), in place. Under data parallelism (DDP) each rank sees its own
        slice of the batch and must clip its copy of W_q and W_k by the same factors; call this
        before :meth:`clip_` (row-sharded FSDP2 layers are reduced inside it). One process: a
        no-op.

            >>> clip.reduce_over_ranks_(); clip.clip_()
        """
        import torch.distributed as dist

        if not dist.is_available() or not dist.is_initialized() or dist.get_world_size(group) == 1:
            return
        for name in sorted(self._running):  # every rank ran the same layers: same keys and order
            dist.all_reduce(self._running[name], op=dist.ReduceOp.MAX, group=group)

    @torch.no_grad()
    def clip_(self) -> dict[str, torch.Tensor]:
        """Clip every head over tau by the GQA rule, using the max logits recorded since the last
        call; returns and stores them (:attr:`max_logits`) and resets the record."""
        self.max_logits, self._running = self._allreduce_sharded(self._running), {}
        self.factors = {}
        if self.tau is None:
            return self.max_logits
        for pair in self.pairs:
            s = self.max_logits.get(pair.name)
            if s is None or not bool((s > self.tau).any()):
                continue  # nothing over tau: the weights stay bit for bit unchanged
            q_f, k_f = gqa_factors(s, self.tau, pair.n_kv_heads)
            _scale_heads_(pair.q, q_f, pair.head_dim)
            _scale_heads_(pair.k, k_f, pair.head_dim)
            self.factors[pair.name] = (q_f, k_f)
        return self.max_logits

    def _allreduce_sharded(self, running: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The max over the ranks of each sharded layer's record: ranks see different batches,
        and must clip alike. A layer a rank did not record enters as -inf."""
        meshes: dict[object, list[QKPair]] = {}
        for pair in self.pairs:
            for which, layer in (("q", pair.q), ("k", pair.k)):
                _shards.check_row_sharded(layer.weight, f"{pair.name}'s {which} weight")
            mesh = _shards.mesh_of(pair.q.weight)
            if mesh is not None:
                meshes.setdefault(mesh, []).append(pair)
        out = dict(running)
        for mesh, pairs in meshes.items():
            device = _shards.local(pairs[0].q.weight).device
            flat = torch.cat([running[p.name].to(device, torch.float32) if p.name in running
                              else torch.full((p.n_heads,), -math.inf, device=device)
                              for p in pairs])
            _shards.all_reduce_(flat, mesh, op="max")
            for pair, s in zip(pairs, flat.split([p.n_heads for p in pairs])):
                if bool(torch.isfinite(s).any()) or pair.name in running:
                    out[pair.name] = s
        return out

    def max_logit(self) -> float:
        """The largest logit of any head in the last :meth:`clip_`'s record (NaN when none)."""
        values = [float(s.max()) for s in self.max_logits.values()]
        return max(values) if values else math.nan

    def table(self):
        """The last record as a tidy DataFrame: layer, head, max_logit, clipped (bool).

            >>> clip.table().groupby("layer").max_logit.max()
        """
        import pandas as pd

        rows = [{"layer": name, "head": h, "max_logit": float(v),
                 "clipped": self.tau is not None and float(v) > self.tau}
                for name, s in self.max_logits.items() for h, v in enumerate(s.tolist())]
        return pd.DataFrame(rows, columns=["layer", "head", "max_logit", "clipped"])


def _check_pair(pair: QKPair, tau: float | None) -> None:
    if not isinstance(pair, QKPair):
        raise TypeError(f"pairs must hold QKPair objects; got {type(pair).__name__}")
    normed = [n for n in ("q_norm", "k_norm") if getattr(pair.attention, n, None) is not None]
    if normed and tau is not None:
        raise ValueError(f"{pair.name!r} normalizes q/k after the projections ({', '.join(normed)}), "
                         "so scaling W_q and W_k cannot lower its logits; QK-norm already bounds "
                         "them. Use tau=None to only record the max logits")
    ok = pair.n_kv_heads >= 1 and pair.n_heads % pair.n_kv_heads == 0
    rows_q, rows_k = pair.q.weight.shape[0], pair.k.weight.shape[0]
    if not ok or rows_q != pair.n_heads * pair.head_dim or rows_k != pair.n_kv_heads * pair.head_dim:
        raise ValueError(f"QKPair {pair.name!r}: q has {rows_q} rows and k {rows_k}, but n_heads="
                         f"{pair.n_heads}, n_kv_heads={pair.n_kv_heads}, head_dim={pair.head_dim}; "
                         "need q rows = n_heads*head_dim, k rows = n_kv_heads*head_dim and "
                         "n_heads a multiple of n_kv_heads")


def find_pairs(model: nn.Module) -> list[QKPair]:
    """The attention layers QK-Clip recognises in ``model`` (module docstring), in module order.

        >>> [p.name for p in find_pairs(mutransfer.zoo.gpt(64, depth=2))]
        ['blocks.0.attn', 'blocks.1.attn']
    """
    pairs = []
    for name, m in model.named_modules():
        if all(isinstance(getattr(m, a, None), nn.Linear) for a in ("q", "k")) and all(
                hasattr(m, a) for a in ("n_heads", "d_head", "scale")):
            pairs.append(QKPair(name, m.q, m.k, m.n_heads, m.n_heads, m.d_head, float(m.scale)))
        elif all(isinstance(getattr(m, a, None), nn.Linear) for a in ("q_proj", "k_proj")) and \
                hasattr(m, "scaling") and hasattr(getattr(m, "config", None), "num_attention_heads"):
            cfg = m.config
            pairs.append(QKPair(name, m.q_proj, m.k_proj, cfg.num_attention_heads,
                                getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads,
                                m.head_dim, float(m.scaling), bool(getattr(m, "is_causal", True)),
                                attention=m))
    return pairs


# ---------------------------------------------------------------------- transformers
def _hf_attention(module, query, key, value, attention_mask, *args, **kwargs):
    """The function registered as ``mutransfer_qkclip``: record, then run the wrapped one."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    record, original = _HF_RECORDERS[module]
    if module.training:
        record(query.detach(), key.detach(), attention_mask)
    if original == "eager":
        from importlib import import_module

        fn = import_module(type(module).__module__).eager_attention_forward
    else:
        fn = ALL_ATTENTION_FUNCTIONS[original]
    return fn(module, query, key, value, attention_mask, *args, **kwargs)


class _HFHandle:
    def __init__(self, module: nn.Module, config, original: str):
        self.module, self.config, self.original = module, config, original

    def remove(self) -> None:
        _HF_RECORDERS.pop(self.module, None)
        if not any(getattr(m, "config", None) is self.config for m in list(_HF_RECORDERS)):
            self.config._attn_implementation = self.original


def _attach_hf(pair: QKPair, record) -> _HFHandle:
    from transformers.modeling_utils import AttentionInterface

    module, config = pair.attention, pair.attention.config
    AttentionInterface.register(HF_IMPLEMENTATION, _hf_attention)
    current = config._attn_implementation or "eager"
    original = _HF_RECORDERS[module][1] if module in _HF_RECORDERS else current
    if original == HF_IMPLEMENTATION:  # another QKClip on the same config already wrapped it
        original = next(orig for m, (_, orig) in _HF_RECORDERS.items()
                        if getattr(m, "config", None) is config)

    def on_attention(q, k, mask):
        s = head_max_logits(q, k, pair.scale, pair.causal, mask)
        record(pair, s)

    _HF_RECORDERS[module] = (on_attention, original)
    config._attn_implementation = HF_IMPLEMENTATION
    return _HFHandle(module, config, original)

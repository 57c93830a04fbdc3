"""Optimizers in torch's conventions that know nothing of muP: Muon (with AdamW groups),
Newton-Schulz, spectral weight decay and QK-Clip (scaling.md section 4).

The Plan's per-role multipliers reach these only as param-group keys (``lr``, ``alpha``,
``expert_dims``, ``decay``), so this package is a leaf: it imports torch and nothing of
mutransfer. :mod:`mutransfer.core` builds its param groups.

All of them also work on FSDP2's row-sharded DTensors (``Shard(0)`` on a 1-D mesh) and give one
process's result: whole-matrix steps go through counted collectives (``_shards``), Muon's
msign by the owner-based or gather-per-matrix design (``_sharded_msign``).

    >>> opt = mutransfer.optim.Muon([{"params": [w], "alpha": 2.0}], lr=0.02)
"""
from mutransfer.optim._decay import (DECAY_KINDS, SpectralDecayHook, expert_spectral_decay_, spectral_decay_,
                                     top_singular_vector)
from mutransfer.optim._muon import Muon, default_ns_dtype, newton_schulz
from mutransfer.optim._shards import TRAFFIC
from mutransfer.optim._qkclip import QKClip, QKPair, gqa_factors, head_max_logits

__all__ = ["DECAY_KINDS", "Muon", "QKClip", "QKPair", "SpectralDecayHook", "TRAFFIC", "default_ns_dtype", "expert_spectral_decay_",
           "gqa_factors", "head_max_logits", "newton_schulz", "spectral_decay_",
           "top_singular_vector"]

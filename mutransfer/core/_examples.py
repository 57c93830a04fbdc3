"""Example inputs for one forward pass, which roles are traced on (:mod:`mutransfer.core._usage`).

A model may offer its own (``model.example_input()``, as the zoo's do); a transformers model
gets one built from its config.
"""
from __future__ import annotations

import torch
from torch import nn


def default_example(model: nn.Module):
    """An input for one forward of ``model``: its ``example_input()`` (the zoo models have one),
    else, for a transformers model, ids or images built from its config (:func:`example_input`),
    else None (roles then come from module types and shapes).

        >>> default_example(mutransfer.zoo.gpt(width=32)).shape
        torch.Size([2, 8])
    """
    make = getattr(model, "example_input", None)
    if callable(make):
        return make()
    if hasattr(model, "main_input_name") and hasattr(model, "config"):  # a transformers model
        return example_input(model)
    return None


def example_input(model) -> dict | None:
    """Keyword inputs for one forward of a transformers ``model``, built from its config: a
    (2, 8) batch of token ids (plus ``decoder_input_ids`` for encoder-decoders), or for
    ``main_input_name == "pixel_values"`` a (2, C, S, S) batch of images; None otherwise.

        >>> example_input(AutoModelForCausalLM.from_config(cfg))["input_ids"].shape
        torch.Size([2, 8])
    """
    cfg, name = getattr(model, "config", None), getattr(model, "main_input_name", None)
    device = next(iter(model.parameters())).device
    if cfg is None or name is None or device.type == "meta":
        return None
    if name == "pixel_values":
        size = cfg.image_size if isinstance(cfg.image_size, int) else cfg.image_size[0]
        return {name: torch.zeros(2, getattr(cfg, "num_channels", 3), size, size, device=device)}
    if name != "input_ids" or not isinstance(getattr(cfg, "vocab_size", None), int):
        return None
    ids = torch.arange(16, device=device).reshape(2, 8) % cfg.vocab_size
    extra = {"decoder_input_ids": ids} if getattr(cfg, "is_encoder_decoder", False) else {}
    return {"input_ids": ids, **extra}

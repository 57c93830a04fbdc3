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


_CONVS = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}
_DEFAULT_LENGTHS = (8, 16)
_DEFAULT_SIZES = (32, 16, 64, 224, 28, 8)


def candidate_examples(model: nn.Module, lengths=()) -> list[tuple[torch.Tensor, str]]:
    """Inputs to try for one forward of ``model``, built from its first input-like modules (in
    registration order), each with a description for the plan:

    - an ``nn.Embedding``: integer tokens ``(2, T)`` in ``[0, num_embeddings)``;
    - an ``nn.Linear``: ``(2, in_features)``;
    - a conv: ``(2, C, *S)`` with ``C = in_channels``.

    ``lengths`` are sizes read off the model's bare parameters (a positional table's rows, a
    patch grid): sequence lengths ``T`` are tried at ``min(8, L)`` and ``L``, image sizes at
    ``sqrt(n) * stride`` for each square ``n`` (and ``n - 1``, a cls token's room), before the
    usual ``T`` of 8 and 16 and sizes of 8 to 224. Nothing is run here: the caller keeps the
    first candidate that its forward accepts.

        >>> [d for _, d in candidate_examples(nn.Sequential(nn.Linear(4, 2)))]
        ["(2, 4) floats for the first nn.Linear '0'"]
    """
    out, seen = [], set()
    for name, module in model.named_modules():
        kind = type(module)
        if kind in seen or not isinstance(module, (nn.Embedding, nn.Linear, *_CONVS)):
            continue
        seen.add(kind)
        out += _candidates_for(name, module, [int(v) for v in lengths if int(v) > 0])
    return out


def _device_dtype(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(module.parameters(), None)
    if p is None or p.is_meta:
        return torch.device("cpu") if p is None else p.device, torch.get_default_dtype()
    return p.device, p.dtype if p.is_floating_point() else torch.get_default_dtype()


def _candidates_for(name: str, module: nn.Module, lengths: list[int]) -> list[tuple[torch.Tensor, str]]:
    device, dtype = _device_dtype(module)
    label = f"the first nn.{type(module).__name__} {name!r}"
    if isinstance(module, nn.Embedding):
        steps = [t for L in lengths for t in (min(8, L), L)] + list(_DEFAULT_LENGTHS)
        vocab = module.num_embeddings
        return [(torch.arange(2 * t, device=device).reshape(2, t) % vocab,
                 f"token ids (2, {t}) in [0, {vocab}) for {label}") for t in dict.fromkeys(steps)]
    if isinstance(module, nn.Linear):
        return [(torch.zeros(2, module.in_features, device=device, dtype=dtype),
                 f"(2, {module.in_features}) floats for {label}")]
    dims = _CONVS[type(module)]
    stride = module.stride[0]
    grids = [n for L in lengths for n in (L, L - 1) if n > 0 and round(n ** (1 / dims)) ** dims == n]
    sizes = [round(n ** (1 / dims)) * stride for n in grids] + list(_DEFAULT_SIZES)
    shape = lambda s: (2, module.in_channels, *([s] * dims))  # noqa: E731
    return [(torch.zeros(shape(s), device=device, dtype=dtype),
             f"{shape(s)} zeros for {label}") for s in dict.fromkeys(sizes)]

"""Models to parametrize: :mod:`~mutransfer.models.zoo` (a small GPT, an MLP and a CNN, each a
factory ``width -> nn.Module``) and :mod:`~mutransfer.models.hf` (width families of transformers
models built from their configs). Both are public modules, also reached as ``mutransfer.zoo``
and ``mutransfer.hf`` (the factory strings of configs and stored studies name them so).

May import :mod:`mutransfer.optim` and :mod:`mutransfer.core`.

    >>> model = mutransfer.models.zoo.gpt(width=128, depth=2)
"""
from mutransfer.models import hf, zoo
from mutransfer.models._specs import load_object

__all__ = ["hf", "load_object", "zoo"]

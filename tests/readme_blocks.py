"""The README's Python blocks, for tests that run one in a special setting (2 ranks, transformers):
the README stays the single copy of each recipe."""
from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_block(marker: str) -> str:
    """The one ```python block of README.md that contains ``marker``."""
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S) if marker in b]
    if len(blocks) != 1:
        raise LookupError(f"{len(blocks)} README python blocks contain {marker!r}; expected one")
    return blocks[0]

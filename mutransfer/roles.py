"""Parameter roles (scaling.md section 1) and their inference by comparing shapes with a base.

A role says which of a parameter's dims grow with width:

| role   | which dims scale     | examples                                   |
|--------|----------------------|--------------------------------------------|
| input  | fan_out only         | embeddings, the first Linear from data     |
| hidden | fan_in and fan_out   | attention q/k/v/o, MLP up/down             |
| output | fan_in only          | LM head, classifier                        |
| vector | a 1-D param's length | biases, LayerNorm gains                    |
| fixed  | nothing              | a scalar temperature, a vocab-sized bias   |
"""
from __future__ import annotations

import enum


class Role(str, enum.Enum):
    """Which dims of a parameter scale with width."""

    INPUT = "input"
    HIDDEN = "hidden"
    OUTPUT = "output"
    VECTOR = "vector"
    FIXED = "fixed"

    def __str__(self) -> str:
        return self.value

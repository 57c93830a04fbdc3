"""Shared test setup: one torch thread (CI has 2 cores), seeded RNGs, and a CUDA marker."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none is present")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tokens_data(tmp_path_factory):
    """A tiny prepared token folder (``tiny.tiny_tokens``: a 300-token BPE of a few stdlib files),
    made once per session; read it, never write into it."""
    from tiny import tiny_tokens

    folder = tmp_path_factory.mktemp("tokens") / "data"
    tiny_tokens(folder)
    return folder


@pytest.fixture
def quickstart_tokens(tokens_data, tmp_path):
    """``tmp_path`` holding ``reports/tokens-quickstart/data`` (a link to :func:`tokens_data`):
    the folder the tokens quickstart's prepare writes and the README's recipes read."""
    from tiny import QUICKSTART_TOKENS

    link = tmp_path / QUICKSTART_TOKENS
    link.parent.mkdir(parents=True)
    link.symlink_to(tokens_data, target_is_directory=True)
    return tmp_path

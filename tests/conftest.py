"""Shared fixtures: a tiny world built once per test run, small enough for unit tests.

``make test`` runs the suite on pytest-xdist workers, one per core. A fixture that many modules read is
built once per run, not once per worker: the first worker to need it builds it under a file lock, the
others read it (``build_once``). Each worker keeps torch to one thread, so the workers do not fight over
the cores.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]


def _build_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """``tmp/name``, filled by ``build(tmp/name)`` by the first worker of this run that asks for it.

    Under pytest-xdist every worker has its own temporary directory inside one shared per-run directory; the
    shared one holds the build and its lock. A build that failed is not marked done, so the next worker to
    ask retries it and reports its own failure.
    """
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    out, done = shared / name, shared / f"{name}.done"
    with FileLock(str(shared / f"{name}.lock")):
        if not done.exists():
            if out.exists():
                shutil.rmtree(out)
            out.mkdir()
            build(out)
            done.touch()
    return out


@pytest.fixture(scope="session")
def build_once(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, Callable[[Path], None]], Path]:
    """``build_once(name, build)``: a directory built once per test run, shared by the xdist workers."""
    return lambda name, build: _build_once(tmp_path_factory, name, build)


@pytest.fixture(scope="session")
def world_dir(build_once) -> Path:
    """A built micro world: 20 train items per level, small corpus, trained tokenizer."""
    from pseudocot.config import ProtocolConfig, WorldConfig
    from pseudocot.world.build import build_world

    cfg = WorldConfig(train_per_level=20, validation_per_level=5, test_per_level=5, corpus_documents=200)
    return build_once("world", lambda out: build_world(cfg, ProtocolConfig(answer_style="cloze"), out))


@pytest.fixture(scope="session")
def tokenizer(world_dir: Path):
    """The micro world's tokenizer, loaded like a hub tokenizer."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(world_dir / "tokenizer")


@pytest.fixture
def random_llama(tokenizer):
    """A small randomly initialised Llama over the micro world's tokenizer (seeded)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(cfg).eval()

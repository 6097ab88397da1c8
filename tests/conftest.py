"""Shared fixtures: a tiny world built once per session, small enough for unit tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def world_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A built micro world: 20 train items per level, small corpus, trained tokenizer."""
    from pseudocot.config import ProtocolConfig, WorldConfig
    from pseudocot.world.build import build_world

    out = tmp_path_factory.mktemp("world")
    cfg = WorldConfig(train_per_level=20, validation_per_level=5, test_per_level=5, corpus_documents=200)
    build_world(cfg, ProtocolConfig(answer_style="cloze"), out)
    return out


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

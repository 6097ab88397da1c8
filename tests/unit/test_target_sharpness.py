"""How peaked a teacher cache's targets are, read off its shards."""

import math

import pytest
import torch
from safetensors.torch import save_file

from pseudocot.errors import PseudoCoTError
from pseudocot.train.teacher_cache import target_sharpness


def _shard(path, probs):
    logprobs = torch.tensor(probs, dtype=torch.float32).clamp(min=1e-30).log()
    save_file(
        {
            "indices": torch.zeros(logprobs.shape, dtype=torch.int32),
            "logprobs": logprobs,
            "offsets": torch.tensor([0, len(probs)], dtype=torch.int64),
        },
        str(path),
    )


def test_entropy_counts_the_rest_bucket_and_top1_below_half(tmp_path):
    _shard(tmp_path / "shard-00000.safetensors", [[1.0, 0.0], [0.6, 0.4]])
    _shard(tmp_path / "shard-00001.safetensors", [[0.4, 0.3]])  # 0.3 left for the rest bucket
    got = target_sharpness(tmp_path)
    second = -(0.6 * math.log(0.6) + 0.4 * math.log(0.4))
    third = -(0.4 * math.log(0.4) + 2 * 0.3 * math.log(0.3))
    assert got["positions"] == 3
    assert got["entropy"] == pytest.approx((0.0 + second + third) / 3, abs=1e-6)
    assert got["top1"] == pytest.approx((1.0 + 0.6 + 0.4) / 3, abs=1e-6)
    assert got["top1_below_half"] == pytest.approx(1 / 3)


def test_an_empty_cache_is_named(tmp_path):
    with pytest.raises(PseudoCoTError, match="holds no shards"):
        target_sharpness(tmp_path)

"""Teacher logits computed once: the top-k log-probabilities of every target position, in shards.

Running the teacher alongside the student costs a teacher forward pass per student step, every
epoch and every seed. With ``teacher_logits: cached`` the teacher instead runs once over the
training set; for each position that the loss counts (a completion token) it keeps the k most
likely next tokens and their log-probabilities at temperature 1 (the rest of the mass is
recovered as one bucket by :func:`pseudocot.train.losses.topk_buckets`).

Layout of a cache directory::

    index.json                  what the cache was computed from (teacher, data, k, sequence length)
    shard-00000.safetensors     examples [0, shard_size): indices (P, k) int32, logprobs (P, k)
    ...                         float32, offsets (n + 1,) int64 into the P positions of the shard

Each shard is written to a temporary file and renamed, so a killed run leaves only whole shards
and the next run computes only the missing ones. A cache whose ``index.json`` does not match what
is asked for is not reused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import Dataset
from transformers import PreTrainedModel

from pseudocot.errors import PseudoCoTError
from pseudocot.progress import track
from pseudocot.stage import check_safetensors, processes, read_json
from pseudocot.train.losses import IGNORE_INDEX
from pseudocot.train.sft import pad_collate


def _shard_path(cache_dir: Path, shard: int) -> Path:
    return cache_dir / f"shard-{shard:05d}.safetensors"


def counted_positions(labels: list[int]) -> list[int]:
    """Positions j whose logits the loss counts: those predicting a label at j + 1."""
    return [j for j in range(len(labels) - 1) if labels[j + 1] != IGNORE_INDEX]


@torch.inference_mode()
def _compute_shard(
    teacher: PreTrainedModel, examples: list[dict[str, list[int]]], pad_id: int, vocab_size: int, k: int, batch: int
) -> dict[str, torch.Tensor]:
    collate = pad_collate(pad_id)
    indices, logprobs, offsets = [], [], [0]
    for start in range(0, len(examples), batch):
        chunk = examples[start : start + batch]
        inputs = collate(chunk)
        logits = teacher(
            input_ids=inputs["input_ids"].to(teacher.device), attention_mask=inputs["attention_mask"].to(teacher.device)
        ).logits[..., :vocab_size]  # (B, T, V)
        for row, example in enumerate(chunk):
            positions = torch.tensor(counted_positions(example["labels"]), dtype=torch.long)
            logp = logits[row, positions.to(logits.device)].float().log_softmax(-1)  # (P, V)
            top = logp.topk(k, dim=-1)
            indices.append(top.indices.to(torch.int32).cpu())
            logprobs.append(top.values.cpu())
            offsets.append(offsets[-1] + len(positions))
    return {
        "indices": torch.cat(indices),
        "logprobs": torch.cat(logprobs),
        "offsets": torch.tensor(offsets, dtype=torch.int64),
    }


def build_cache(
    teacher: PreTrainedModel,
    examples: list[dict[str, list[int]]],
    cache_dir: Path,
    key: dict[str, Any],
    pad_id: int,
    vocab_size: int,
    top_k: int,
    shard_size: int,
    batch_size: int = 16,
) -> dict[str, int]:
    """Computes the shards of ``cache_dir`` that are missing; returns counts of shards computed and reused.

    ``key`` identifies what the cache is computed from; a directory holding another key is cleared.
    Under several processes each computes its share of the missing shards.
    """
    main, barrier = processes()
    rank, world = _rank_and_world()
    cache_dir = Path(cache_dir)
    key = {**key, "top_k": top_k, "shard_size": shard_size, "examples": len(examples)}
    shards = range((len(examples) + shard_size - 1) // shard_size)
    if main:
        index = cache_dir / "index.json"
        if _read_key(index) != key:  # another key, or an index damaged or missing: no shard is trusted
            for old in cache_dir.glob("shard-*.safetensors"):
                old.unlink()
        cache_dir.mkdir(parents=True, exist_ok=True)
        index.write_text(json.dumps(key, indent=2, sort_keys=True))
    barrier()
    todo = [s for s in shards if not _whole(_shard_path(cache_dir, s))]
    barrier()  # every process has the same list before any writes a shard
    # Each process computes its share of the missing shards, so none waits through the whole build.
    for shard in track(todo[rank::world], "teacher top-k cache") if main else todo[rank::world]:
        part = examples[shard * shard_size : (shard + 1) * shard_size]
        tensors = _compute_shard(teacher, part, pad_id, vocab_size, top_k, batch_size)
        tmp = _shard_path(cache_dir, shard).with_suffix(f".tmp{rank}")
        save_file(tensors, str(tmp))
        os.replace(tmp, _shard_path(cache_dir, shard))
    barrier()
    return {"shards": len(shards), "computed": len(todo), "reused": len(shards) - len(todo)}


def target_sharpness(cache_dir: Path) -> dict[str, float]:
    """How peaked a cache's targets are, over every cached position: the mean entropy (nats) of the top-k
    plus the mass they leave over (the rest bucket of :func:`pseudocot.train.losses.topk_buckets`, here
    unclamped), the mean top-1 probability, and the share of positions whose top-1 token holds under half of
    the mass. Targets near one-hot carry little beyond the hard labels."""
    entropy, top1, split, positions = 0.0, 0.0, 0.0, 0
    shards = sorted(Path(cache_dir).glob("shard-*.safetensors"))
    if not shards:
        raise PseudoCoTError(f"teacher cache {cache_dir} holds no shards; run the distillation hop that builds it.")
    for shard in shards:
        with safe_open(str(shard), framework="pt") as f:
            top = f.get_tensor("logprobs").double().exp()  # (P, k), sorted: the top-1 token first
        p = torch.cat([top, (1.0 - top.sum(-1, keepdim=True)).clamp(min=0.0)], dim=-1)
        entropy += float(-(p * p.clamp(min=1e-300).log()).sum())
        top1 += float(top[:, 0].sum())
        split += float((top[:, 0] < 0.5).sum())
        positions += top.shape[0]
    n = max(positions, 1)
    return {"entropy": entropy / n, "top1": top1 / n, "top1_below_half": split / n, "positions": positions}


def _read_key(index: Path) -> Any:
    """The key an ``index.json`` holds; ``None`` when it is missing or damaged, so that its shards are computed
    again."""
    try:
        return read_json(index)
    except PseudoCoTError:
        return None


def _whole(shard: Path) -> bool:
    """Whether ``shard`` is a whole safetensors file; a missing or damaged one is computed again, as a
    cache entry is (the file's header is read, not its tensors)."""
    try:
        check_safetensors(shard)
    except PseudoCoTError:
        return False
    return True


def _rank_and_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class CachedTeacherDataset(Dataset):
    """Examples with their cached teacher top-k, for :func:`topk_collate`."""

    def __init__(self, examples: list[dict[str, list[int]]], cache_dir: Path, shard_size: int) -> None:
        self.examples = examples
        self.cache_dir = Path(cache_dir)
        self.shard_size = shard_size
        self._shards: dict[int, tuple[Any, torch.Tensor]] = {}  # shard -> (open file, offsets)

    def __getstate__(self) -> dict[str, Any]:
        # Open files do not cross into data-loader workers; each opens its own.
        return {**self.__dict__, "_shards": {}}

    def __len__(self) -> int:
        return len(self.examples)

    def _shard(self, shard: int) -> tuple[Any, torch.Tensor]:
        # Each shard is opened (memory-mapped) once and kept open: only the rows asked for are read.
        if shard not in self._shards:
            f = safe_open(str(_shard_path(self.cache_dir, shard)), framework="pt")
            self._shards[shard] = (f, f.get_tensor("offsets"))
        return self._shards[shard]

    def __getitem__(self, i: int) -> dict[str, Any]:
        shard, row = divmod(i, self.shard_size)
        f, offsets = self._shard(shard)
        start, end = (int(x) for x in offsets[row : row + 2])
        indices, logprobs = f.get_slice("indices")[start:end], f.get_slice("logprobs")[start:end]
        example = self.examples[i]
        if end - start != len(counted_positions(example["labels"])):
            raise RuntimeError(f"teacher cache {self.cache_dir} does not match example {i}; delete it and rerun.")
        return {**example, "topk_indices": indices, "topk_logprobs": logprobs}


def topk_collate(pad_id: int) -> Any:
    """Pads like :func:`pad_collate` and lays each example's cached top-k onto its counted positions.

    Adds ``topk_indices`` (B, T - 1, k) and ``topk_logprobs`` (B, T - 1, k), aligned with
    ``labels[:, 1:]`` (positions not counted hold zeros and are masked by the loss).
    """
    pad = pad_collate(pad_id)

    def collate(batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        out = pad([{"input_ids": b["input_ids"], "labels": b["labels"]} for b in batch])
        width, k = out["input_ids"].shape[1], batch[0]["topk_indices"].shape[-1]
        indices = torch.zeros((len(batch), width - 1, k), dtype=torch.long)
        logprobs = torch.zeros((len(batch), width - 1, k), dtype=torch.float32)
        for row, b in enumerate(batch):
            positions = torch.tensor(counted_positions(b["labels"]), dtype=torch.long)
            indices[row, positions] = b["topk_indices"].long()
            logprobs[row, positions] = b["topk_logprobs"]
        return out | {"topk_indices": indices, "topk_logprobs": logprobs}

    return collate

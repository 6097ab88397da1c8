"""The teacher's top-k cache: it feeds the same loss as the live teacher, resumes by shard, and trains."""

import json
import pickle

import torch

from pseudocot.config import DistillHopConfig
from pseudocot.models import load_model, load_tokenizer
from pseudocot.train.distill import distill
from pseudocot.train.losses import TopK, distillation_loss
from pseudocot.train.sft import PromptCompletionDataset, pad_collate
from pseudocot.train.teacher_cache import CachedTeacherDataset, build_cache, topk_collate


def _setup(run, k=None):
    teacher_dir = run / "finetune" / "teacher" / "merged"
    tokenizer = load_tokenizer(str(teacher_dir))
    examples = PromptCompletionDataset(run / "data" / "reasoning_train.jsonl", tokenizer, 128).examples[:10]
    teacher = load_model(str(teacher_dir)).eval()
    return teacher, tokenizer, examples, k or len(tokenizer)


def test_full_vocabulary_cache_gives_the_live_teachers_loss(micro_run, tmp_path):
    _, run, _ = micro_run
    teacher, tokenizer, examples, vocab = _setup(run)
    build_cache(teacher, examples, tmp_path, {"t": 1}, tokenizer.pad_token_id, vocab, vocab, shard_size=4)
    dataset = CachedTeacherDataset(examples, tmp_path, 4)
    batch = topk_collate(tokenizer.pad_token_id)([dataset[i] for i in range(6)])
    # Its shards stay open after a read; a copy for a data-loader worker opens its own and reads the same rows.
    copy = pickle.loads(pickle.dumps(dataset))
    assert torch.equal(copy[5]["topk_logprobs"], dataset[5]["topk_logprobs"])
    plain = pad_collate(tokenizer.pad_token_id)(examples[:6])
    assert torch.equal(batch["input_ids"], plain["input_ids"])
    student = torch.randn(*batch["input_ids"].shape, vocab)[:, :-1]  # (B, T-1, V)
    with torch.no_grad():
        dense = teacher(input_ids=plain["input_ids"], attention_mask=plain["attention_mask"]).logits[:, :-1, :vocab]
    labels = batch["labels"][:, 1:]
    for kind in ("reverse_kl", "forward_kl"):
        live = distillation_loss(student, dense, labels, kind=kind)["loss"]
        cached = distillation_loss(student, TopK(batch["topk_indices"], batch["topk_logprobs"]), labels, kind=kind)
        assert torch.allclose(live, cached["loss"], atol=1e-4), (kind, live, cached["loss"])


def test_a_killed_cache_computes_only_its_missing_shards(micro_run, tmp_path):
    _, run, _ = micro_run
    teacher, tokenizer, examples, _ = _setup(run)
    args = (tokenizer.pad_token_id, len(tokenizer), 8)
    first = build_cache(teacher, examples, tmp_path, {"t": 1}, *args, shard_size=3)
    assert first == {"shards": 4, "computed": 4, "reused": 0}
    kept = (tmp_path / "shard-00001.safetensors").read_bytes()
    (tmp_path / "shard-00002.safetensors").unlink()
    again = build_cache(teacher, examples, tmp_path, {"t": 1}, *args, shard_size=3)
    assert again == {"shards": 4, "computed": 1, "reused": 3}
    assert (tmp_path / "shard-00001.safetensors").read_bytes() == kept
    other = build_cache(teacher, examples, tmp_path, {"t": 2}, *args, shard_size=3)
    assert other["computed"] == 4  # another teacher: nothing reused


def test_a_damaged_shard_or_index_is_computed_again(micro_run, tmp_path):
    _, run, _ = micro_run
    teacher, tokenizer, examples, _ = _setup(run)
    args = (tokenizer.pad_token_id, len(tokenizer), 8)
    build_cache(teacher, examples, tmp_path, {"t": 1}, *args, shard_size=3)
    whole = (tmp_path / "shard-00002.safetensors").read_bytes()
    (tmp_path / "shard-00002.safetensors").write_bytes(whole[: len(whole) // 2])  # a write cut short
    again = build_cache(teacher, examples, tmp_path, {"t": 1}, *args, shard_size=3)
    assert again == {"shards": 4, "computed": 1, "reused": 3}
    assert (tmp_path / "shard-00002.safetensors").read_bytes() == whole
    (tmp_path / "index.json").write_bytes(b"\xff\x00 not json")
    assert build_cache(teacher, examples, tmp_path, {"t": 1}, *args, shard_size=3)["computed"] == 4
    (tmp_path / "index.json").unlink()  # shards whose key is unknown
    assert build_cache(teacher, examples, tmp_path, {"t": 1}, *args, shard_size=3)["computed"] == 4


def test_cached_distillation_trains_and_reuses_its_cache(micro_run, tmp_path):
    _, run, _ = micro_run
    hop = DistillHopConfig(
        student=str(run / "zoo" / "tiny-3b"),
        teacher_logits="cached",
        top_k=8,
        cache_shard_size=16,
        max_steps=3,
        per_device_train_batch_size=2,
        save_steps=10,
        max_seq_length=128,
    )
    teacher = str(run / "finetune" / "teacher" / "merged")
    cache = tmp_path / "cache"
    first = distill("ttm", hop, teacher, hop.student, run / "data", tmp_path / "a", cache, {"t": 1})
    assert first["cache_computed"] == first["cache_shards"] > 0 and first["cache_reused"] == 0
    assert torch.isfinite(torch.tensor(first["train_loss"]))
    second = distill("ttm", hop, teacher, hop.student, run / "data", tmp_path / "b", cache, {"t": 1})
    assert second["cache_reused"] == first["cache_shards"] and second["cache_computed"] == 0
    assert (tmp_path / "b" / "model.safetensors").is_file()
    assert json.loads((cache / "index.json").read_text())["top_k"] == 8

"""Typed configuration: one pydantic model per stage, YAML presets, dotted overrides.

``load_config("configs/tiny.yaml", ["finetune.base.learning_rate=1e-4"])`` reads a preset, applies
overrides (values parsed as YAML) and validates the result. A file that is not a YAML mapping of
stage sections, and any unknown key, wrong type or out-of-range value, raises
:class:`~pseudocot.errors.ConfigError` with one sentence naming the file and the key. Every field's
description is its CLI help (``pseudocot config fields``).

Kept free of torch and transformers: the CLI imports it for ``--help``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pseudocot.errors import ConfigError


class Section(BaseModel):
    """Base of every config section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ---------------------------------------------------------------------------------------------
# Tiny world and zoo


class WorldConfig(Section):
    """The tiny world: its generated items, corpus and tokenizer (``pseudocot world build``)."""

    seed: int = Field(0, description="Seed of every generator; the test set is fixed by it.")
    levels: list[int] = Field([0, 1, 2, 3, 4], min_length=1, description="Difficulty levels (reasoning steps).")
    easy_max_steps: int = Field(0, ge=0, description="Items with at most this many steps count as easy.")
    hard_min_steps: int = Field(3, ge=1, description="Items with at least this many steps count as hard.")
    train_per_level: int = Field(600, ge=1, description="Train items per subject and difficulty level.")
    validation_per_level: int = Field(50, ge=1, description="Validation items per subject and level.")
    test_per_level: int = Field(50, ge=1, description="Test items per subject and level.")
    unknown_levels: list[int] = Field(
        [], description="Levels that also hold items resting on a card's digit, which no reasoning can find."
    )
    unknown_share: float = Field(
        0.0, ge=0, le=1, description="Such items per subject and level of unknown_levels, as a share of *_per_level."
    )
    corpus_documents: int = Field(20000, ge=1, description="Documents in each role's pretraining corpus.")
    vocab_size: int = Field(512, ge=300, le=65536, description="Target size of the BPE vocabulary.")

    @model_validator(mode="after")
    def _levels_valid(self) -> WorldConfig:
        if len(set(self.levels)) != len(self.levels):
            raise ValueError("world.levels must not repeat a level")
        if any(level < 0 for level in self.levels):
            raise ValueError("difficulty levels cannot be negative")
        if self.hard_min_steps <= self.easy_max_steps:
            raise ValueError("hard_min_steps must be greater than easy_max_steps")
        if not set(self.unknown_levels) <= set(self.levels):
            raise ValueError("world.unknown_levels must be levels of world.levels")
        return self


class ZooModelConfig(Section):
    """One Llama-architecture model of the zoo and how long to pretrain it."""

    stands_for: str = Field(description="The hub model this size stands for, e.g. meta-llama/Llama-3.1-8B.")
    corpus: Literal["teacher", "base"] = Field(
        description="The role corpus it is pretrained on: teacher (writes reasoning) or base (reads thoughts, "
        "never writes them)."
    )
    hidden_size: int = Field(ge=8, description="Width of the residual stream.")
    num_hidden_layers: int = Field(ge=1, description="Number of transformer blocks.")
    num_attention_heads: int = Field(ge=1, description="Attention heads per block.")
    num_key_value_heads: int = Field(ge=1, description="Key/value heads (grouped-query attention).")
    intermediate_size: int = Field(ge=8, description="Width of the MLP.")
    max_steps: int = Field(ge=1, description="Pretraining optimizer steps.")
    batch_size: int = Field(ge=1, description="Sequences of block_size tokens per step.")
    learning_rate: float = Field(gt=0, le=1, description="Peak learning rate (cosine decay after warmup).")

    @model_validator(mode="after")
    def _heads_divide(self) -> ZooModelConfig:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be a multiple of num_attention_heads")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        return self


class ZooConfig(Section):
    """The tiny world's model zoo, pretrained from scratch on the corpus (``pseudocot zoo build``)."""

    models: dict[str, ZooModelConfig] = Field(min_length=1, description="Zoo models by name.")
    block_size: int = Field(256, ge=16, description="Tokens per packed pretraining sequence.")
    warmup_steps: int = Field(50, ge=0, description="Linear warmup steps before cosine decay.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    seed: int = Field(0, description="Seed of initialisation and data order.")
    save_steps: int = Field(200, ge=1, description="Checkpoint every this many steps (resume after a kill).")
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute activations in the backward pass instead of keeping them: less memory for more "
        "time, the same weights (so it does not key the stage's output).",
    )
    snapshot: str | None = Field(
        None,
        description="Shipped checkpoints (pseudocot zoo snapshot): a model built for this very config, corpus and "
        "tokenizer is copied from here, hash-checked, instead of pretrained; null pretrains every model.",
    )


class ProtocolConfig(Section):
    """The thought protocol's choices (see pseudocot.prompts), shared by every stage."""

    answer_style: Literal["letter", "cloze"] = Field(
        "letter", description="Options shown and a letter answered (letter), or options hidden and scored (cloze)."
    )
    one_shot: bool = Field(False, description="Give the base and the TTM a one-shot example of the output format.")


class ProbeConfig(Section):
    """Measures the zoo: accuracy answering directly, and with the gold explanation in context."""

    split: Literal["validation", "test"] = Field(
        "validation", description="Which split of the world to probe (gates and roles are read on validation)."
    )
    batch_size: int = Field(64, ge=1, description="Prompts per forward pass.")


# ---------------------------------------------------------------------------------------------
# Data formation


RecordField = Literal["id", "subject", "question", "choices", "answer", "reasoning", "difficulty"]


def _unset(value: Any) -> bool:
    return value is None


class SourceConfig(Section):
    """One source dataset of the merged mix."""

    name: str = Field(min_length=1, description="Name recorded as each record's source.")
    kind: Literal["tiny", "jsonl", "csv", "mmlu_csv", "mmlu_parquet", "hf"] = Field(
        description="Loader: tiny-world subject, JSONL/CSV records, MMLU CSV dir, cais/mmlu parquet, or datasets."
    )
    path: str = Field(
        description="Tiny subject, file with a {split} placeholder (jsonl/csv), directory (mmlu) or dataset id (hf)."
    )
    subject: str | None = Field(None, description="MMLU subject, e.g. college_mathematics (mmlu and hf kinds).")
    hf_config: str | None = Field(None, description="Dataset configuration name for the hf kind.")
    # The settings below are left out of the section's data when unset, so a source that does not use
    # them has the stage key of one written without them.
    fields: dict[RecordField, str] | None = Field(
        None,
        exclude_if=_unset,
        description="The source's column for each record field it names otherwise, e.g. MetaMathQA's "
        "{question: query, reasoning: response}; the columns not named keep their names.",
    )
    final_answer: str | None = Field(
        None,
        exclude_if=_unset,
        description="For worked answers written as free text: a regular expression whose first group, at its last "
        "match in the reasoning, is the final answer (GSM8K: '####\\s*(.+?)\\s*$'); the reasoning then ends "
        "with 'The answer is X.' in place of the match.",
    )
    hf_splits: dict[Literal["train", "validation", "test"], str] | None = Field(
        None,
        exclude_if=_unset,
        description="The dataset's split for each of ours (hf kind), with datasets' slicing, e.g. "
        "{validation: 'train[-500:]'}; '' leaves that split empty; splits not named are read by their own name.",
    )

    @field_validator("final_answer")
    @classmethod
    def _final_answer_has_a_group(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                groups = re.compile(value).groups
            except re.error as err:
                raise ValueError(f"final_answer is not a regular expression ({err})") from None
            if groups < 1:
                raise ValueError("final_answer needs a group around the answer, e.g. '####\\s*(.+)'")
        return value


class DataConfig(Section):
    """Data formation (paper 4.1): load sources, merge with a stratified shuffle, chat-format."""

    sources: list[SourceConfig] = Field(min_length=1, description="Source datasets to merge.")
    splits: list[Literal["train", "validation", "test"]] = Field(
        ["train", "validation", "test"], min_length=1, description="Splits to form."
    )
    seed: int = Field(0, description="Seed of the stratified shuffle.")
    tokenizer: str = Field("world", description="Tokenizer for chat formatting: 'world' or a model path/id.")


# ---------------------------------------------------------------------------------------------
# Training stages (fine-tune, distill) and the router


class LoraConfig(Section):
    """LoRA adapter settings (PEFT)."""

    r: int = Field(32, ge=1, description="LoRA rank.")
    alpha: int = Field(64, ge=1, description="LoRA alpha (scaling = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] = Field(
        ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"], min_length=1, description="Modules to adapt."
    )


class TrainConfig(Section):
    """Optimizer and schedule settings shared by the training stages."""

    learning_rate: float = Field(2e-4, gt=0, le=1, description="Peak learning rate.")
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "linear", description="Learning-rate schedule."
    )
    warmup_steps: int = Field(0, ge=0, description="Warmup steps.")
    per_device_train_batch_size: int = Field(8, ge=1, description="Batch size per device.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    max_steps: int = Field(300, ge=1, description="Optimizer steps.")
    max_seq_length: int = Field(2048, ge=16, description="Longest tokenized example; longer ones are cut.")
    bf16: bool = Field(False, description="Train in bfloat16 mixed precision (needs a GPU that supports it).")
    save_steps: int = Field(100, ge=1, description="Checkpoint every this many steps (resume after a kill).")
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute activations in the backward pass instead of keeping them: less memory for more "
        "time, the same weights (so it does not key the stage's output).",
    )
    group_by_length: bool = Field(
        False,
        description="Batch examples of similar length together: less padding, so faster steps, at the cost of "
        "batches less mixed in length (transformers' grouping, its order seeded per epoch).",
    )
    seed: int = Field(0, description="Seed of initialisation and data order.")


class FinetuneRunConfig(TrainConfig):
    """One supervised (Q)LoRA fine-tune: the base on the task set, or the teacher on the reasoning set."""

    model: str = Field(description="Model to fine-tune: a 'zoo:NAME', a local directory or a hub id.")
    target: Literal["answer", "reasoning"] = Field(description="What the assistant learns to write.")
    load_in_4bit: bool = Field(False, description="QLoRA: load the model in 4-bit NF4 (needs CUDA and bitsandbytes).")
    method: Literal["lora", "full"] = Field(
        "lora", description="LoRA adapter (the paper's), or every weight (for models too small for an adapter)."
    )
    reasoning: Literal["gold", "traces", "both"] = Field(
        "gold",
        description="What a reasoning fine-tune learns from: the data's explanations (gold), the synth "
        "traces stage's accepted traces, or both.",
    )
    lora: LoraConfig = Field(default_factory=LoraConfig, description="LoRA adapter settings.")

    @model_validator(mode="after")
    def _full_is_not_quantized(self) -> FinetuneRunConfig:
        if self.method == "full" and self.load_in_4bit:
            raise ValueError("method: full cannot train 4-bit weights; use method: lora for QLoRA")
        return self


class FinetuneConfig(Section):
    """The two fine-tunes of the paper (4.2.1 and 4.2.2)."""

    base: FinetuneRunConfig = Field(description="Task fine-tune of the base LLM.")
    teacher: FinetuneRunConfig = Field(description="Reasoning fine-tune of the teacher.")


class DistillHopConfig(TrainConfig):
    """One knowledge-distillation hop (teacher -> mid, or mid -> TTM)."""

    student: str = Field(description="Student model: a 'zoo:NAME', a local directory or a hub id.")
    alpha: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Weight of cross-entropy; (1 - alpha) weighs the KL term; 1 is plain SFT (no teacher run).",
    )
    temperature: float = Field(1.0, gt=0, description="Softmax temperature of the KL term (scaled by T^2).")
    divergence: Literal["forward_kl", "reverse_kl", "jsd", "skew_kl"] = Field(
        "reverse_kl", description="Divergence between teacher and student distributions."
    )
    beta: float = Field(0.5, ge=0, le=1, description="Mixing weight of the JSD and skew-KL divergences.")
    trainable: Literal["qk_lora", "qk_full", "lora", "full"] = Field(
        "qk_lora", description="What the student trains: LoRA or full weights on q/k only, LoRA on more, or all."
    )
    lora: LoraConfig = Field(
        default_factory=lambda: LoraConfig(target_modules=["q_proj", "k_proj"]), description="LoRA settings."
    )
    teacher_logits: Literal["online", "cached"] = Field(
        "online",
        description="Run the teacher alongside the student, or cache its top-k log-probs on disk once and reuse them.",
    )
    top_k: int = Field(64, ge=1, description="Teacher tokens kept per position when cached (the rest is one bucket).")
    cache_shard_size: int = Field(512, ge=1, description="Examples per shard of the teacher cache.")
    logits: Literal["all", "targets"] = Field(
        "all",
        description="Where the student's and the online teacher's logits are computed: every position, or only "
        "those predicting a counted (completion) token of some row of the batch. The loss is the same; at a "
        "large vocabulary the head is much of a small student's compute and its logits most of the memory.",
    )


class DistillConfig(Section):
    """Two-step distillation (paper 2, 4.2.2): teacher -> mid -> TTM, one stage run per hop."""

    mid: DistillHopConfig = Field(description="First hop: the fine-tuned teacher into the mid model.")
    ttm: DistillHopConfig = Field(description="Second hop: the mid model into the Tiny Thought Model.")


class RouterConfig(Section):
    """The MLP router that decides after each answer of the base whether to add a thought (paper 3),
    and the system it joins: ``pseudocot router`` writes the system directory."""

    base: str = Field(
        "finetune:base",
        description="The base: 'finetune:base' (its merged weights), 'zoo:NAME', a directory or hub id.",
    )
    ttm: str = Field("distill:ttm", description="The TTM: 'distill:ttm', 'zoo:NAME', a directory or hub id.")
    hidden_sizes: list[int] = Field([64], description="Widths of the MLP's hidden layers.")
    max_thoughts: int = Field(2, ge=1, description="Most thoughts per question.")
    split: Literal["train", "validation"] = Field(
        "train",
        description="Where the rollouts come from: train (fit) and validation (calibration), or validation alone, "
        "split in two (the first train_questions fit, the rest calibrate) so that no model trained on them.",
    )
    train_questions: int | None = Field(
        None,
        ge=1,
        description="Training questions rolled out (the first N of the fitting split; all if unset).",
    )
    validation_questions: int | None = Field(
        None, ge=1, description="Validation questions rolled out to calibrate the threshold (all if unset)."
    )
    learning_rate: float = Field(3e-3, gt=0, le=1, description="Adam learning rate.")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay.")
    epochs: int = Field(300, ge=1, description="Full-batch training steps over the rollout features.")
    calibrate: Literal["accuracy", "call_rate"] = Field(
        "accuracy",
        description="Threshold: the best validation accuracy (fewest thoughts within the tolerance), or a call rate.",
    )
    accuracy_tolerance: float = Field(
        0.005, ge=0, le=1, description="Accuracy given up for fewer thoughts when calibrating for accuracy."
    )
    target_call_rate: float | None = Field(
        None, gt=0, le=1, description="Share of questions given a thought, when calibrate is call_rate."
    )
    batch_size: int = Field(64, ge=1, description="Questions per batch in the rollouts.")
    seed: int = Field(0, description="Seed of the MLP's initialisation.")
    # The regime of the rollouts: the router learns from, and is calibrated on, answers given the way the
    # system will give them. Unset, they are left out of the section's key (so are configs written before them).
    answer_mode: Literal["score", "generate"] | None = Field(
        None,
        exclude_if=_unset,
        description="How the base answers a multiple-choice question in the rollouts: options scored, or a written "
        "answer whose option is read off it; unset: as the evaluation answers (eval.answer_mode), else score.",
    )
    preset: Literal["eval", "base"] | None = Field(
        None,
        exclude_if=_unset,
        description="The decoding of the base's written answers in the rollouts (answer_mode generate): eval "
        "(decoding.eval, as the evaluation answers) or base (decoding.base, as the answer stage, chat and serve "
        "do); unset: eval.",
    )

    @model_validator(mode="after")
    def _call_rate_needs_target(self) -> RouterConfig:
        if self.calibrate == "call_rate" and self.target_call_rate is None:
            raise ValueError("calibrate: call_rate needs target_call_rate")
        return self


# ---------------------------------------------------------------------------------------------
# Decoding and evaluation


class GenerationPreset(Section):
    """A named generation configuration (paper 4.3)."""

    do_sample: bool = Field(False, description="Sample instead of greedy or beam search.")
    num_beams: int = Field(1, ge=1, description="Beams for beam search (1 = greedy when not sampling).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature.")
    top_k: int = Field(50, ge=0, description="Top-k filtering when sampling.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus filtering when sampling.")
    max_new_tokens: int = Field(512, ge=1, description="Most tokens to generate.")


class DecodingConfig(Section):
    """Decoding presets: evaluation (greedy), and inference for the base and the TTM."""

    eval: GenerationPreset = Field(default_factory=GenerationPreset, description="Evaluation decoding.")
    base: GenerationPreset = Field(default_factory=GenerationPreset, description="Inference decoding of the base.")
    ttm: GenerationPreset = Field(default_factory=GenerationPreset, description="Inference decoding of the TTM.")


class TracesConfig(Section):
    """``pseudocot synth traces``: a large model writes reasoning traces for questions with gold answers;
    a trace is kept only if the answer it reaches is the gold one (paper 1.2, 2)."""

    model: str = Field(
        "finetune:teacher",
        description="The model writing traces: 'finetune:teacher', 'zoo:NAME', a directory or hub id.",
    )
    split: Literal["train", "validation"] = Field(
        "train", description="Split of the data stage whose questions get traces."
    )
    questions: int | None = Field(
        None, ge=1, description="At most this many questions (the split's first N; all if unset)."
    )
    samples: int = Field(4, ge=1, description="Traces sampled per question (k).")
    sampling: GenerationPreset = Field(
        default_factory=lambda: GenerationPreset(do_sample=True, temperature=0.8, top_p=0.95, max_new_tokens=256),
        description="Decoding of the traces.",
    )
    batch_size: int = Field(32, ge=1, description="Prompts per generation batch.")
    seed: int = Field(
        0, description="Sampling seed (each batch of questions is seeded from it, so a resumed run samples alike)."
    )


class QAConfig(Section):
    """``pseudocot synth qa``: question-answer pairs grounded in a folder of documents (paper 1.2)."""

    model: str = Field(description="The model writing pairs: a directory or hub id (an instruct model).")
    documents: str = Field(description="Folder of .txt and .md documents (.pdf when pypdf is installed).")
    chunk_tokens: int = Field(384, ge=16, description="Tokens per chunk of a document.")
    chunk_overlap: int = Field(64, ge=0, description="Tokens shared by consecutive chunks.")
    pairs_per_chunk: int = Field(3, ge=1, le=20, description="Pairs asked for per chunk.")
    generation: GenerationPreset = Field(
        default_factory=lambda: GenerationPreset(max_new_tokens=512), description="Decoding of the pairs."
    )
    near_duplicate: float = Field(
        0.8,
        gt=0,
        le=1,
        description="Word-set Jaccard similarity of two questions at which the later is a near duplicate.",
    )
    support: Literal["overlap", "none"] = Field(
        "overlap", description="Keep a pair only if its answer's words are found in its chunk (overlap), or keep all."
    )
    min_support: float = Field(0.7, ge=0, le=1, description="Share of the answer's content words the chunk must hold.")
    batch_size: int = Field(8, ge=1, description="Chunks per generation batch.")

    @model_validator(mode="after")
    def _overlap_below_size(self) -> QAConfig:
        if self.chunk_overlap >= self.chunk_tokens:
            raise ValueError("chunk_overlap must be smaller than chunk_tokens")
        return self


class SynthConfig(Section):
    """Synthetic data: reasoning traces (``traces``) and document-grounded Q&A (``qa``)."""

    traces: TracesConfig | None = Field(None, description="Teacher-written reasoning traces, filtered by answer.")
    qa: QAConfig | None = Field(None, description="Question-answer pairs from documents.")


POLICIES = "router, never, always, random:RATE (RATE in [0, 1]) or entropy:NATS (NATS >= 0)"


def check_policy(spec: str) -> str:
    """``spec`` if it names a thinking policy (see :data:`POLICIES`; RATE and NATS default to 0.5).

    Raises:
        ValueError: one sentence (without its full stop) naming the policy and the valid ones.
    """
    name, sep, arg = spec.partition(":")
    if name in ("router", "never", "always") and not sep:
        return spec
    if name not in ("random", "entropy"):
        raise ValueError(f"unknown policy {spec!r}; use {POLICIES}")
    try:
        value = float(arg) if arg else 0.5
    except ValueError:
        value = math.nan
    if name == "random" and not 0 <= value <= 1:
        raise ValueError(
            f"policy {spec!r}: RATE is the probability of a thought and must be in [0, 1], e.g. random:0.3"
        )
    if name == "entropy" and not 0 <= value < math.inf:
        raise ValueError(f"policy {spec!r}: NATS is an entropy threshold and must be a number >= 0, e.g. entropy:0.5")
    return spec


class EvalSystemConfig(Section):
    """One system of the evaluation (a row of the paper's Table 5.1)."""

    name: str = Field(min_length=1, description="Row name in the report, e.g. 'Llama 3.1 8B + pseudo-CoT'.")
    kind: Literal["plain", "cot", "pseudo_cot"] = Field(
        description="plain: the model answers directly; cot: it writes its own reasoning first; "
        "pseudo_cot: a base + TTM + router system."
    )
    model: str | None = Field(
        None,
        description="plain/cot: the model ('zoo:NAME', 'finetune:NAME', 'distill:NAME', a directory or hub id); "
        "pseudo_cot: a base to put in place of the system's own.",
    )
    system: str | None = Field(
        None, description="pseudo_cot: the system directory (default: this run's router stage output)."
    )
    policy: str = Field("router", description=f"pseudo_cot: {POLICIES}.")
    stands_for: str | None = Field(None, description="The model this row stands for (tiny-world stand-ins).")

    @field_validator("policy")
    @classmethod
    def _policy_known(cls, spec: str) -> str:
        return check_policy(spec)

    @model_validator(mode="after")
    def _model_given(self) -> EvalSystemConfig:
        if self.kind != "pseudo_cot" and not self.model:
            raise ValueError(f"system {self.name!r} of kind {self.kind} needs a model")
        return self


class EvalConfig(Section):
    """Evaluation (paper 5): systems x benchmarks -> accuracy, BLEU, ROUGE-L, cost, intervals, paired tests."""

    benchmarks: list[str] = Field(
        min_length=1, description="Benchmarks: tiny:math, tiny:cs, or mmlu:SUBJECT (e.g. mmlu:college_mathematics)."
    )
    systems: list[EvalSystemConfig] = Field(
        default_factory=list,
        description="Systems (rows); empty: the paper's four (base, base + pseudo-CoT, fine-tuned base, "
        "fine-tuned base + pseudo-CoT) from the finetune and router sections, then the peers.",
    )
    peers: list[str] = Field(default_factory=list, description="Peer models, each a plain system row.")
    baseline: str | None = Field(
        None, description="System every other is tested against (McNemar); default: the first."
    )
    split: Literal["validation", "test"] = Field("test", description="Split of each benchmark to evaluate.")
    limit: int | None = Field(None, ge=1, description="At most this many items per benchmark (all if unset).")
    answer_mode: Literal["score", "generate"] = Field(
        "score",
        description="How the base answers a multiple-choice item: options scored by likelihood (the way "
        "lm-evaluation-harness scores MMLU, though with this protocol's chat prompt, not its 5-shot one), or an "
        "answer generated and its option extracted.",
    )
    mmlu_dir: str | None = Field(
        None, description="Local MMLU: Hendrycks CSV directory or cais/mmlu parquet snapshot (unset: the hub)."
    )
    batch_size: int = Field(64, ge=1, description="Questions per batch.")
    recalibrate: bool = Field(
        False,
        exclude_if=lambda on: not on,  # off, it is left out of the key: configs written before it keep theirs
        description="A pseudo_cot row with another base (its model) has the router's threshold calibrated again "
        "on that base's own rollouts over the router's calibration questions, in this evaluation's answer mode and "
        "decoding; off, it keeps the threshold calibrated on the system's own base (and the report says so).",
    )
    bootstrap_samples: int = Field(1000, ge=100, description="Bootstrap resamples for confidence intervals.")
    seed: int = Field(0, description="Seed of the bootstrap.")

    @model_validator(mode="after")
    def _names_and_baseline(self) -> EvalConfig:
        names = [s.name for s in self.systems] + list(self.peers)
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"two evaluation systems are named {repeated[0]!r}; give each row its own name")
        if self.baseline is not None and self.systems and self.baseline not in names:
            raise ValueError(f"baseline {self.baseline!r} is not one of the systems: {', '.join(names)}")
        return self


# ---------------------------------------------------------------------------------------------


class PseudoCoTConfig(Section):
    """A whole pipeline run."""

    # The sections that make a stage run; a config needs at least one to have anything to do.
    STAGES: ClassVar[tuple[str, ...]] = (
        "world",
        "zoo",
        "probe",
        "data",
        "synth",
        "finetune",
        "distill",
        "router",
        "eval",
    )

    run_dir: str = Field("runs/tiny", description="Directory every stage writes its output under.")
    protocol: ProtocolConfig = Field(default_factory=ProtocolConfig, description="The thought protocol.")
    world: WorldConfig | None = Field(None, description="Tiny world settings (omit for hub-only runs).")
    zoo: ZooConfig | None = Field(None, description="Tiny-world model zoo (omit for hub-only runs).")
    probe: ProbeConfig | None = Field(None, description="Zoo probe: direct vs gold-explanation accuracy.")
    data: DataConfig | None = Field(None, description="Data formation (omit for an evaluation-only config).")
    finetune: FinetuneConfig | None = Field(None, description="Fine-tuning of the base and the teacher.")
    distill: DistillConfig | None = Field(None, description="Two-step distillation into the TTM.")
    router: RouterConfig | None = Field(None, description="The router.")
    decoding: DecodingConfig = Field(default_factory=DecodingConfig, description="Decoding presets.")
    synth: SynthConfig | None = Field(None, description="Synthetic data: reasoning traces and document Q&A.")
    eval: EvalConfig | None = Field(None, description="Evaluation.")

    @model_validator(mode="after")
    def _sections_fit_together(self) -> PseudoCoTConfig:
        if (self.zoo is not None or self.probe is not None) and self.world is None:
            raise ValueError("zoo and probe need a world section")
        if self.probe is not None and self.zoo is None:
            raise ValueError("probe needs a zoo section (the models it measures)")
        traces = self.synth.traces if self.synth else None
        teacher = self.finetune.teacher if self.finetune else None
        if teacher is not None and teacher.reasoning != "gold":
            if traces is None:
                raise ValueError("finetune.teacher.reasoning uses traces; add a synth.traces section")
            if traces.model.startswith(("finetune:", "distill:")):
                raise ValueError(
                    f"synth.traces.model {traces.model} comes from a fine-tune or distillation of this run, which "
                    "cannot also feed the teacher's fine-tune; use reasoning: gold, or a zoo, local or hub model"
                )
        needs_data = [name for name in ("finetune", "distill", "router") if getattr(self, name) is not None]
        needs_data += ["synth"] if traces is not None else []
        if self.data is None:
            if needs_data:
                raise ValueError(f"the {needs_data[0]} section needs a data section (the sets it trains on)")
            return self
        if any(s.kind == "tiny" for s in self.data.sources) and self.world is None:
            raise ValueError("data.sources of kind 'tiny' need a world section")
        if self.data.tokenizer == "world" and self.world is None:
            raise ValueError("data.tokenizer 'world' needs a world section; name a model's tokenizer instead")
        return self


def to_data(section: BaseModel | dict[str, Any]) -> dict[str, Any]:
    """A config section (or a dict of sections) as plain JSON-able data."""
    if isinstance(section, BaseModel):
        return section.model_dump(mode="json")
    return {k: v.model_dump(mode="json") if isinstance(v, BaseModel) else v for k, v in section.items()}


def section_hash(section: BaseModel | dict[str, Any]) -> str:
    """A stable hash of a config section (its JSON with sorted keys)."""
    return hashlib.sha256(json.dumps(to_data(section), sort_keys=True).encode()).hexdigest()[:16]


def _set_dotted(data: dict[str, Any], dotted: str, value: Any, source: str) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for i, key in enumerate(parents):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            parent = ".".join(parents[: i + 1])
            raise ConfigError(f"{source}: cannot set '{dotted}' because '{parent}' is not a section.")
        node = child
    node[leaf] = value


def apply_overrides(data: dict[str, Any], overrides: list[str], source: str = "command line") -> dict[str, Any]:
    """Applies ``key.path=value`` overrides (values parsed as YAML) to a raw config dict, in place."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{source}: override '{item}' is not of the form key.path=value.")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        _set_dotted(data, key.strip(), value, source)
    return data


def _first_error(err: ValidationError, source: str) -> ConfigError:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"])
    if e["type"] == "extra_forbidden":
        what = f"unknown key '{loc}'; check its spelling against `pseudocot config fields`"
    elif e["type"] == "missing":
        what = f"'{loc}' is required but missing"
    else:
        msg = e["msg"].removeprefix("Value error, ")
        what = f"'{loc}': {msg}" if loc else msg
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return ConfigError(f"{source}: {what}{more}.")


def _read_mapping(path: Path) -> dict[str, Any]:
    """The top-level mapping of a YAML config file; anything else is a :class:`ConfigError` naming the file."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass a YAML file such as configs/tiny.yaml.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise ConfigError(
            f"{path} is not a text file (not UTF-8); pass a YAML config such as configs/tiny.yaml."
        ) from None
    except OSError as err:
        raise ConfigError(f"config file {path} cannot be read ({err.strerror}); check its permissions.") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}; fix it, or start from configs/tiny.yaml.") from None
    if data is None:
        raise ConfigError(f"{path} is empty; give it stage sections, as in configs/tiny.yaml.")
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level is a {type(data).__name__}, not a mapping of stage sections "
            "(world:, data:, ...); see configs/tiny.yaml."
        )
    return data


def load_config(path: str | Path, overrides: list[str] | None = None) -> PseudoCoTConfig:
    """Reads a YAML preset, applies dotted overrides and validates it.

    Raises:
        ConfigError: the file is missing, unreadable, not YAML, empty or without a stage section, or a
            key is unknown, mistyped or out of range.
    """
    path = Path(path)
    data = _read_mapping(path)
    source = f"{path} (with overrides)" if overrides else str(path)
    apply_overrides(data, overrides or [], source=source)
    try:
        cfg = PseudoCoTConfig.model_validate(data)
    except ValidationError as err:
        raise _first_error(err, source) from None
    if all(getattr(cfg, name) is None for name in PseudoCoTConfig.STAGES):
        raise ConfigError(
            f"{source} has no stage section, so there is nothing to run; "
            f"add one of {', '.join(PseudoCoTConfig.STAGES)} (see configs/tiny.yaml)."
        )
    return cfg


def field_help(model: type[BaseModel] = PseudoCoTConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """Every config field as (dotted key, type, description), for the CLI's help."""
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        sub = _section_type(field.annotation)
        if sub is not None:
            rows.append((key, "section", field.description or ""))
            is_mapping = getattr(field.annotation, "__origin__", None) is dict
            rows += field_help(sub, key + (".<name>." if is_mapping else "."))
        else:
            rows.append((key, _type_name(field.annotation), field.description or ""))
    return rows


def _section_type(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")

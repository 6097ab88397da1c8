"""The ways the base answers a batch of conversations, each a plain function returning :class:`Answers`.

* :func:`scored`: multiple choice, the options scored by likelihood (as lm-evaluation-harness scores
  MMLU); the base picks the likeliest. This is how the base picks an option everywhere: in the loop,
  in the evaluation (which runs the loop) and in the zoo's probe and the thought-quality table
  (:func:`answer_given`).
* :func:`written`: multiple choice answered as a chat model answers a user (``answer_mode:
  generate``); the option is read off the text.
* :func:`free_text`: a question without options; the base writes its answer, and its confidence is
  the top probabilities at the answer's step where its own token was least likely.

:func:`scored` and :func:`free_text` also return what the router reads: the base's last-layer hidden
state where it gives the answer, and its confidence.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from pseudocot import prompts
from pseudocot.config import GenerationPreset, ProtocolConfig
from pseudocot.infer.choice import extract_choice, fold_common_prefix, score_options
from pseudocot.infer.generate import forward_tail, generate, pad_rows
from pseudocot.infer.prefix_cache import ConversationCache
from pseudocot.models import pad_id
from pseudocot.records import Record

CONFIDENCE_OPTIONS = 4  # free-text answers: the top-4 tokens where the answer is least sure
READOUT_BYTES = 256 * 2**20  # most memory a generation batch may keep for reading its confidence off
FP32 = 4  # bytes
# How options are compared (see :func:`scored`); part of the evaluation's keys, so kept runs scored
# another way are not taken.
OPTION_SCORE = "log-probability per byte"


@dataclass
class Answers:
    """The base's answers to N conversations, what they cost, and (where measured) what the router reads."""

    texts: list[str]
    choices: list[int | None]  # the option each answer picks (None: free text, or a text naming none)
    read: list[int]  # tokens the base ran through for each answer (prompt, or its part not cached)
    written: list[int]  # tokens it generated
    truncated: list[bool]  # a written answer ran into its max_new_tokens
    hidden: torch.Tensor | None = None  # (N, H) last-layer hidden state where the answer is given
    confidence: list[torch.Tensor] | None = None  # per answer: its options' probabilities, or the top ones


def scored(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[list[prompts.Message]],
    records: Sequence[Record],
    style: prompts.AnswerStyle,
    batch_size: int = 32,
    cache: ConversationCache | None = None,
    keys: Sequence[int] = (),
    hidden: bool = True,
) -> Answers:
    """Multiple choice: every option scored by likelihood after the conversation; the base picks the likeliest.

    Options of unequal length are compared per byte, as lm-evaluation-harness's ``acc_norm`` does: each
    option's log-probability (of what follows the options' shared start) is divided by that part's length
    in UTF-8 bytes, then multiplied by the row's mean length to stay on a log-probability's scale. A
    summed log-probability favours short options: on real MMLU college mathematics, SmolLM2 picked a
    shortest option on 78 of 100 items and was right on 12. Where every option has the same length
    (digits, letters) this changes nothing.

    Args:
        cache: the questions' key/value caches (``keys``: each conversation's key). Where every option
            is one token past the options' shared start (digits, letters), one forward pass through
            the cached conversation scores them all; otherwise each option is scored in full.
        hidden: also keep the hidden state where the answer is given (the router's features).
    """
    texts = [prompts.answer_prompt(tokenizer, m) for m in conversations]
    options = [prompts.answer_options(r, style) for r in records]
    # (N, C): each option's log-probability, up to a constant per row (the cache gives logits)
    logp = torch.full((len(texts), max(len(o) for o in options)), float("-inf"))
    states = torch.zeros((len(texts), model.config.hidden_size))
    tokens = [0] * len(texts)
    length = torch.ones_like(logp)  # (N, C): each option's distinct part, in bytes
    normalizer = torch.zeros(len(texts))  # (N,): what turns a cached row's logits into log-probabilities
    plain: list[int] = []
    cached: list[tuple[int, list[int], list[int]]] = []  # (row, prompt ids, option token ids)
    for k, (text, opts) in enumerate(zip(texts, options, strict=True)):
        encode = tokenizer(text, add_special_tokens=False)["input_ids"]
        prompt_ids, rest = fold_common_prefix(
            encode, [tokenizer(o, add_special_tokens=False)["input_ids"] for o in opts]
        )
        length[k, : len(rest)] = torch.tensor([max(1, len(tokenizer.decode(r).encode())) for r in rest])
        if cache is not None and all(len(r) == 1 for r in rest):
            cached.append((k, prompt_ids, [r[0] for r in rest]))
        else:
            plain.append(k)
    for start in range(0, len(cached), batch_size):
        chunk = cached[start : start + batch_size]
        out, states_chunk, ran = cache.extend([keys[k] for k, _, _ in chunk], [ids for _, ids, _ in chunk])
        for j, (k, _, targets) in enumerate(chunk):
            # Raw logits: a constant per row short of log-probabilities, which a softmax over them cancels.
            # Options compared per byte need the constant: the normalizer is kept for those rows.
            logp[k, : len(targets)] = out[j, targets]
            normalizer[k] = out[j].logsumexp(-1)
            states[k], tokens[k] = states_chunk[j], ran[j]
    if plain:
        scores = score_options(
            model, tokenizer, [texts[k] for k in plain], [options[k] for k in plain], batch_size, hidden
        )
        for j, k in enumerate(plain):
            logp[k, : scores.logprobs.shape[1]] = scores.logprobs[j]
            tokens[k] = scores.tokens[j]
            if hidden:
                states[k] = scores.hidden[j]
    confidence = per_byte(logp, length, normalizer, [len(o) for o in options]).softmax(-1)  # (N, C)
    choices = [int(c.argmax()) for c in confidence]
    n = len(texts)
    return Answers(
        texts=[prompts.format_answer(r, c, style) for r, c in zip(records, choices, strict=True)],
        choices=choices,
        read=tokens,
        written=[0] * n,
        truncated=[False] * n,
        hidden=states if hidden else None,
        confidence=[confidence[k, : len(r.choices)] for k, r in enumerate(records)],
    )


def per_byte(logp: torch.Tensor, length: torch.Tensor, normalizer: torch.Tensor, widths: list[int]) -> torch.Tensor:
    """Option scores compared per byte, on a log-probability's scale (see :func:`scored`).

    Args:
        logp: (N, C) each option's log-probability, up to the constant ``normalizer`` (N,) per row; -inf in
            a row's padding columns (past its ``widths`` options).
        length: (N, C) each option's length in bytes (anything in padding columns).
    """
    width = torch.tensor(widths).unsqueeze(1)  # (N, 1)
    real = torch.arange(length.size(1)) < width  # (N, C): a row's own options, not its padding columns
    length = torch.where(real, length, 0.0)
    mean = length.sum(-1, keepdim=True) / width
    scale = torch.where(real, mean / length, 1.0)  # (N, C): exactly 1 where a row's lengths agree
    uneven = (scale != 1).any(-1)
    logp = logp.clone()
    logp[uneven] -= normalizer[uneven, None]  # only there does the per-row constant matter
    return logp * scale


def answer_given(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[Record],
    protocol: ProtocolConfig,
    thoughts: Sequence[str | None] | None = None,
    batch_size: int = 64,
) -> Answers:
    """The base's scored answer to each question, shown an optional thought straight after it (as in
    the thought-first variant of the loop; ``None``: no thought)."""
    conversations = [
        prompts.base_messages(
            r,
            thoughts=[thoughts[i]] if thoughts and thoughts[i] is not None else (),
            one_shot=protocol.one_shot,
            style=protocol.answer_style,
        )
        for i, r in enumerate(records)
    ]
    return scored(model, tokenizer, conversations, records, protocol.answer_style, batch_size, hidden=False)


def written(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[list[prompts.Message]],
    records: Sequence[Record],
    preset: GenerationPreset,
    batch_size: int = 32,
    stopped: Callable[[int], bool] | None = None,
) -> Answers:
    """Multiple choice answered in writing, as a chat model answers a user; the option is read off the
    text (none when it names none). ``stopped(k)``: conversation ``k`` was cancelled (see ``generate``)."""
    texts = [prompts.render(tokenizer, m) for m in conversations]
    out = generate(model, tokenizer, texts, preset, batch_size, stopped=stopped)
    choices = [extract_choice(text, r.choices) for text, r in zip(out.texts, records, strict=True)]
    return Answers(out.texts, choices, out.prompt_tokens, out.generated_tokens, out.truncated)


def free_text(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[list[prompts.Message]],
    preset: GenerationPreset,
    batch_size: int = 32,
    stopped: Callable[[int], bool] | None = None,
) -> Answers:
    """Questions without options: the base writes its answer; its confidence is the top probabilities
    at the answer's step where its own token was least likely.

    Those probabilities and the hidden state at the prompt's end are read off the generation itself
    where they fit in :data:`READOUT_BYTES` (one beam), else off one more batched pass over prompt and
    answer (:func:`answer_confidence`); the two agree (tested)."""
    texts = [prompts.render(tokenizer, m) for m in conversations]
    config = model.config.get_text_config()
    prompt_bound = max(len(t.encode()) for t in texts)  # a byte-level tokenizer's tokens are bytes at most
    fits = _readout_bytes(config, preset.max_new_tokens, prompt_bound) * min(len(texts), batch_size) <= READOUT_BYTES
    readout = _least_sure if preset.num_beams == 1 and fits else None
    out = generate(model, tokenizer, texts, preset, batch_size, readout=readout, stopped=stopped)
    n = len(texts)
    answers = Answers(out.texts, [None] * n, out.prompt_tokens, out.generated_tokens, out.truncated)
    if readout:
        answers.hidden = torch.stack([state for state, _ in out.readouts])
        answers.confidence = [top for _, top in out.readouts]
        return answers
    prompt_ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    longest = max(len(p) + len(a) for p, a in zip(prompt_ids, out.answer_ids, strict=True))
    keep = max(len(a) for a in out.answer_ids) + 1
    size = max(1, min(batch_size, READOUT_BYTES // _second_pass_bytes(config, longest, keep)))
    states, tops = [], []
    for start in range(0, n, size):
        rows = range(start, min(start + size, n))
        s, t = answer_confidence(model, tokenizer, [prompt_ids[k] for k in rows], [out.answer_ids[k] for k in rows])
        states.append(s)
        tops += list(t)
    answers.hidden, answers.confidence = torch.cat(states), tops
    return answers


def _readout_bytes(config: PretrainedConfig, steps: int, prompt_tokens: int) -> int:
    """Bytes one row of a generation batch keeps for its readout: the steps' logits (and one copy),
    every layer's hidden states, the key/value cache."""
    layers, width = config.num_hidden_layers, config.hidden_size
    return FP32 * (2 * steps * config.vocab_size + (3 * layers + 1) * width * (prompt_tokens + steps))


def _second_pass_bytes(config: PretrainedConfig, tokens: int, kept: int) -> int:
    """Bytes one row of :func:`answer_confidence` takes: the widest activations (the MLP's) over its
    ``tokens``, and the logits over the ``kept`` positions (and one copy)."""
    mlp = getattr(config, "intermediate_size", 4 * config.hidden_size)
    return FP32 * (2 * tokens * mlp + 2 * kept * config.vocab_size)


def _least_sure(logp: torch.Tensor, answer: list[int]) -> torch.Tensor:
    """The top probabilities at the step (rows of ``logp``, one per answer token) where the answer's
    own token was least likely."""
    own = logp[torch.arange(len(answer)), torch.tensor(answer)]
    return logp[int(own.argmin())].exp().topk(CONFIDENCE_OPTIONS).values


@torch.inference_mode()
def answer_confidence(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt_ids: list[list[int]], answer_ids: list[list[int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each prompt and the answer the base wrote to it (token ids), in one forward pass: the last
    hidden state at the prompt's end (B, H), and the top probabilities where the answer's own token
    was least likely (B, CONFIDENCE_OPTIONS).

    Rows are left-padded so every answer ends at the last position: logits are computed over the
    longest answer only, and only the last layer's hidden states are kept."""
    ids, mask = pad_rows([p + a for p, a in zip(prompt_ids, answer_ids, strict=True)], pad_id(tokenizer), left=True)
    width = ids.shape[1]
    keep = max(len(a) for a in answer_ids) + 1  # the prompt's last position predicts the first answer token
    out, last = forward_tail(model, ids, mask, keep, use_cache=False)
    logits = out.logits[:, -keep:]  # (B, keep, V)
    states = torch.zeros((len(answer_ids), model.config.hidden_size))
    tops = torch.zeros((len(answer_ids), CONFIDENCE_OPTIONS))
    for r, answer in enumerate(answer_ids):
        before = keep - len(answer) - 1  # window index of the prompt's last position
        window = logits[r, before : before + len(answer)].float().log_softmax(-1).cpu()
        tops[r] = _least_sure(window, answer)
        states[r] = last[r, width - len(answer) - 1].float().cpu()
    return states, tops

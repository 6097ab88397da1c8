"""Multiple-choice scoring by log-likelihood, as lm-evaluation-harness scores MMLU.

Each prompt is followed by each of its candidate continuations (``" A"``.. ``" D"``, or the options'
texts) and the model's log-probability of every continuation is returned; the argmax is the model's choice and the
softmax over candidates is its confidence over the options.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from pseudocot import prompts as protocol_prompts
from pseudocot.config import ProtocolConfig
from pseudocot.data.records import LETTERS, Record
from pseudocot.models import pad_id


def _right_padded(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask


@dataclass
class Scores:
    """What scoring the options of N prompts gives."""

    logprobs: torch.Tensor  # (N, C) float32, -inf where a prompt has fewer candidates
    hidden: torch.Tensor | None  # (N, H) last-layer hidden state where the answer is predicted
    tokens: list[int]  # tokens each prompt's scoring ran through the model (its cost)


def fold_common_prefix(prompt: list[int], cands: list[list[int]]) -> tuple[list[int], list[list[int]]]:
    """Moves the candidates' shared leading tokens (e.g. the space of ``" 7"``/``" 3"``) into the prompt."""
    shared = 0
    while all(len(c) > shared + 1 for c in cands) and len({c[shared] for c in cands}) == 1:
        shared += 1
    return prompt + cands[0][:shared], [c[shared:] for c in cands]


@torch.inference_mode()
def score_options(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    continuations: Sequence[Sequence[str]],
    batch_size: int = 32,
    return_hidden: bool = False,
) -> Scores:
    """Log-probability of each prompt's candidate continuations, optionally with a hidden state.

    Prompts are tokenized as they are (no special tokens added: chat-rendered text carries its own).
    Tokens that all of a prompt's candidates begin with are moved into the prompt: the scores are
    then conditional on that shared start, which changes neither their ranking nor their softmax.
    When every remaining continuation is one token, one forward pass per prompt scores all its
    candidates; otherwise each (prompt, continuation) pair is scored as the
    sum of its continuation tokens' log-probabilities.

    Args:
        continuations: for each prompt, its candidates (e.g. ``[" A", " B", " C", " D"]``).
        return_hidden: also return the last layer's hidden state at the position that predicts the
            answer (the end of the prompt with the shared prefix).
    """
    pad = pad_id(tokenizer)
    cache: dict[str, list[int]] = {}

    def encode(text: str) -> list[int]:
        if text not in cache:
            cache[text] = tokenizer(text, add_special_tokens=False)["input_ids"]
        return cache[text]

    folded = [
        fold_common_prefix(encode(p), [encode(c) for c in cands])
        for p, cands in zip(prompts, continuations, strict=True)
    ]
    prompt_ids = [f[0] for f in folded]
    cont_ids = [f[1] for f in folded]
    device = model.device
    out = torch.full((len(prompts), max(len(c) for c in continuations)), float("-inf"))
    hidden: torch.Tensor | None = None
    single = all(len(c) == 1 for cands in cont_ids for c in cands)
    tokens = [len(p) if single or return_hidden else 0 for p in prompt_ids]
    if single or return_hidden:
        states = []
        for start in range(0, len(prompts), batch_size):
            rows = prompt_ids[start : start + batch_size]
            ids, mask = _right_padded(rows, pad)
            result = model(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=return_hidden)
            last = (mask.sum(1) - 1).to(device)  # (B,)
            index = torch.arange(len(rows), device=device)
            if return_hidden:
                states.append(result.hidden_states[-1][index, last].float().cpu())  # (B, H)
            if single:
                logp = result.logits[index, last].float().log_softmax(-1).cpu()  # (B, V)
                for k in range(len(rows)):
                    targets = [c[0] for c in cont_ids[start + k]]
                    out[start + k, : len(targets)] = logp[k, targets]
        hidden = torch.cat(states) if return_hidden else None
        if single:
            return Scores(out, hidden, tokens)
    pairs = [(i, j) for i, cands in enumerate(cont_ids) for j in range(len(cands))]
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        rows = [prompt_ids[i] + cont_ids[i][j] for i, j in chunk]
        ids, mask = _right_padded(rows, pad)
        logp = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float().log_softmax(-1).cpu()
        for k, (i, j) in enumerate(chunk):
            n_prompt, cont = len(prompt_ids[i]), cont_ids[i][j]
            positions = torch.arange(n_prompt - 1, n_prompt - 1 + len(cont))
            out[i, j] = logp[k, positions, torch.tensor(cont)].sum()
            tokens[i] += len(rows[k])
    return Scores(out, hidden, tokens)


def continuation_logprobs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    continuations: Sequence[Sequence[str]],
    batch_size: int = 32,
) -> torch.Tensor:
    """Log-probability of each prompt's candidates, (N, most candidates), as :func:`score_options`."""
    return score_options(model, tokenizer, prompts, continuations, batch_size).logprobs


def choose(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[Record],
    protocol: ProtocolConfig,
    thoughts: Sequence[str | None] | None = None,
    batch_size: int = 64,
) -> tuple[list[str], torch.Tensor]:
    """The base's pick for each record, given an optional thought for each (shown after the question).

    Returns:
        The picked option letters, and the softmax over each record's options (its confidence),
        (N, most options of any record).
    """
    texts = []
    for i, record in enumerate(records):
        thought = [thoughts[i]] if thoughts and thoughts[i] is not None else ()
        messages = protocol_prompts.base_messages(
            record, thoughts=thought, one_shot=protocol.one_shot, style=protocol.answer_style
        )
        texts.append(protocol_prompts.answer_prompt(tokenizer, messages))
    options = [protocol_prompts.answer_options(r, protocol.answer_style) for r in records]
    logp = continuation_logprobs(model, tokenizer, texts, options, batch_size)  # (N, C)
    return [LETTERS[i] for i in logp.argmax(-1).tolist()], logp.softmax(-1)


def grouped_accuracy(
    records: Sequence[Record], picks: Sequence[str], easy_max_steps: int, hard_min_steps: int, prefix: str = ""
) -> dict[str, float]:
    """Accuracy keyed ``{prefix}subject/steps``, ``{prefix}subject/all``, ``{prefix}easy``,
    ``{prefix}hard`` (subjects pooled, by reasoning steps) and ``{prefix}all``."""
    hits: dict[str, list[bool]] = defaultdict(list)
    for record, pick in zip(records, picks, strict=True):
        hit = pick == record.answer
        hits[f"{prefix}{record.subject}/{record.difficulty}"].append(hit)
        hits[f"{prefix}{record.subject}/all"].append(hit)
        hits[f"{prefix}all"].append(hit)
        steps = record.difficulty or 0
        if steps <= easy_max_steps:
            hits[f"{prefix}easy"].append(hit)
        elif steps >= hard_min_steps:
            hits[f"{prefix}hard"].append(hit)
    return {key: sum(v) / len(v) for key, v in sorted(hits.items())}

"""How the base's pick among a question's options is found: scored by likelihood, or read off its text.

* :func:`score_options` scores multiple choice by log-likelihood, as lm-evaluation-harness scores
  MMLU: each prompt is followed by each of its candidate continuations (``" A"``.. ``" D"``, or the
  options' texts); the argmax is the model's choice and the softmax over candidates its confidence.
* :func:`extract_choice` reads which option a written answer picks: a bare letter, ``(B)``, ``B.``,
  ``The answer is B``, ``The best answer is B``, or, with no letter, the one option whose text the
  answer states. Ambiguous or empty outputs give ``None`` (counted as wrong, and counted apart).
  :func:`reached_choice` reads the option a reasoning trace concludes with.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from pseudocot.infer.generate import cache_kwargs, forward_tail, pad_rows, returned_cache
from pseudocot.models import pad_id
from pseudocot.records import LETTERS, Record


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
    candidates, with logits at its end only (:func:`~pseudocot.infer.generate.forward_tail`);
    otherwise a candidate's score is the sum of its tokens' log-probabilities, the prompt run once and
    its key/value cache shared by its candidates (on real MMLU, whose options run to tens of tokens,
    that is the prompt once instead of four times).

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
    out = torch.full((len(prompts), max(len(c) for c in continuations)), float("-inf"))
    states: list[torch.Tensor] = []
    tokens = [len(p) for p in prompt_ids]
    if all(len(c) == 1 for cands in cont_ids for c in cands):
        for start in range(0, len(prompts), batch_size):
            rows = prompt_ids[start : start + batch_size]
            result, last = forward_tail(model, *pad_rows(rows, pad, left=True), use_cache=False)
            states.append(last[:, -1].float().cpu())  # (B, H)
            logp = result.logits[:, -1].float().log_softmax(-1).cpu()  # (B, V)
            for k in range(len(rows)):
                targets = [c[0] for c in cont_ids[start + k]]
                out[start + k, : len(targets)] = logp[k, targets]
        return Scores(out, torch.cat(states) if return_hidden else None, tokens)
    step = max(1, batch_size // out.shape[1])  # prompts per pass, each with all its options beside it
    for start in range(0, len(prompts), step):
        end = min(start + step, len(prompts))
        states.append(_score_after_prompts(model, prompt_ids[start:end], cont_ids[start:end], pad, out[start:end]))
    for i, cands in enumerate(cont_ids):
        tokens[i] += sum(len(c) for c in cands)
    return Scores(out, torch.cat(states) if return_hidden else None, tokens)


@torch.inference_mode()
def _score_after_prompts(
    model: PreTrainedModel, prompts: list[list[int]], options: list[list[list[int]]], pad: int, out: torch.Tensor
) -> torch.Tensor:
    """Fills ``out`` (P, C) with each prompt's options' summed log-probabilities; returns its hidden states.

    Each prompt runs once; its key/value cache is repeated for its options, which then run after it
    together, right-padded (lm-evaluation-harness runs prompt and option anew for every option).
    """
    per = out.shape[1]
    ids, mask = pad_rows(prompts, pad, left=True)
    result, last = forward_tail(model, ids, mask, use_cache=True)
    first = result.logits[:, -1].float().log_softmax(-1).cpu()  # (P, V): each option's first token
    cache = returned_cache(result)
    cache.batch_repeat_interleave(per)
    # A prompt with fewer options repeats its first one in the free slots; those scores are dropped.
    rows = [cands[j] if j < len(cands) else cands[0] for cands in options for j in range(per)]
    cont, cont_mask = pad_rows(rows, pad)  # (P * per, W)
    positions = mask.sum(-1).repeat_interleave(per)[:, None] + torch.arange(cont.shape[1])
    after = model(
        input_ids=cont.to(model.device),
        attention_mask=torch.cat([mask.repeat_interleave(per, 0), cont_mask], dim=1).to(model.device),
        position_ids=positions.to(model.device),
        use_cache=False,
        **cache_kwargs(model, cache),
    )
    # Position k of an option predicts its token k + 1: the rest of each option's log-probability.
    logp = after.logits[:, :-1].float().log_softmax(-1)  # (P * per, W - 1, V)
    picked = logp.gather(-1, cont[:, 1:, None].to(logp.device)).squeeze(-1)
    rest = (picked * cont_mask[:, 1:].to(picked.device)).sum(-1).cpu()  # (P * per,)
    for k, cands in enumerate(options):
        for j, option in enumerate(cands):
            out[k, j] = first[k, option[0]] + rest[k * per + j]
    return last[:, -1].float().cpu()


def is_right(record: Record, choice: int | None) -> bool:
    """Whether a pick (an option's index) is the question's gold option; no pick is wrong."""
    return choice is not None and choice == record.answer_index


# "answer is B", "Answer: (C)", "answer is **B**": an upper-case letter (so the article "a" is not
# read as option A), or a lower-case one only in parentheses or ending the text.
_STATED = re.compile(
    r"\b(?:[Bb]est |[Cc]orrect |[Ff]inal )?[Aa]nswer\s*(?:is|:)\s*:?\s*\**\s*"
    r"(?:\(([A-Ja-j])\)|([A-J])(?![A-Za-z0-9])|([a-j])\W*$)"
)
_BARE = re.compile(r"^\(?([A-J])\)?[.:)]?$")
_LEADING = re.compile(r"^\(?([A-J])[).:]\s")
_TRAILING = re.compile(r"(?:\bis|:)\s+\**\(?([A-J])\)?\**\.?$")  # "... I think it is C"
_ANSWER_TEXT = re.compile(r"\banswer\s*(?:is|:)\s*(.+)$", re.IGNORECASE | re.DOTALL)


def extract_choice(text: str, choices: Sequence[str]) -> int | None:
    """The option (index) a model's output picks, or ``None`` when it picks none or several."""
    text = (text or "").strip()
    if not text:
        return None
    letters = LETTERS[: len(choices)]

    def index(letter: str) -> int | None:
        letter = letter.upper()
        return letters.index(letter) if letter in letters else None

    stated = [index(next(g for g in m.groups() if g)) for m in _STATED.finditer(text)]
    stated = [i for i in stated if i is not None]  # a letter past the options is not an answer
    if stated:
        return stated[-1]
    for pattern in (_BARE, _LEADING, _TRAILING):
        match = pattern.search(text) if pattern is _TRAILING else pattern.match(text)
        if match and index(match.group(1)) is not None:
            return index(match.group(1))
    # No letter: the one option whose text the answer states (after "answer is" when present).
    tail = _ANSWER_TEXT.search(text)
    region = (tail.group(1) if tail else text).strip().rstrip(".").strip()
    exact = [i for i, c in enumerate(choices) if region.lower() == c.strip().lower()]
    if len(exact) == 1:
        return exact[0]
    mentioned = [
        i
        for i, c in enumerate(choices)
        if c.strip() and re.search(rf"(?<!\w){re.escape(c.strip())}(?!\w)", region, re.I)
    ]
    return mentioned[0] if len(mentioned) == 1 else None


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_CONCLUDES = re.compile(r"\b(?:answer|result|therefore|thus|hence|so|final)\b", re.IGNORECASE)


def concluding_sentence(text: str) -> str:
    """The sentence a reasoning text concludes with: the last one that says so ("So the result is 8.",
    "Therefore, the answer is B."), else its last sentence."""
    sentences = [s.strip() for s in _SENTENCE_END.split((text or "").strip()) if s.strip()]
    if not sentences:
        return ""
    return next((s for s in reversed(sentences) if _CONCLUDES.search(s)), sentences[-1])


def reached_choice(text: str, choices: Sequence[str]) -> int | None:
    """The option a reasoning trace reaches: read off its concluding sentence only, so that a value an
    earlier step mentions is not taken for the trace's answer."""
    return extract_choice(concluding_sentence(text), choices)

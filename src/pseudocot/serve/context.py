"""Whether a request fits the models' context, checked before it is queued (refused as vLLM does).

The context is the smaller ``max_position_embeddings`` of the base and the TTM. On the base a
request needs its last prompt as the loop builds it (system turn, history, question, every answer and
thought turn, the last answer) plus the tokens still to be written into it: each written answer
(``max_tokens``) and each thought (the TTM's ``max_new_tokens``); on the TTM, its last prompt plus
the answers and thoughts written into it. Counting renders those prompts with the answers and
thoughts left empty (a scored option's answer is its text) and tokenizes them; two cheap bounds
settle most requests first, so a long body is refused without being tokenized and a short one
accepted without being rendered:

* at least: every token spans at most the vocabulary's longest token, in characters, except the
  tokenizer's special tokens, which a text may spell out;
* at most: every token spans at least one byte of the rendered prompt, which is its template's bytes
  (measured once per shape of conversation) plus the request's texts.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from pseudocot import prompts
from pseudocot.config import GenerationPreset
from pseudocot.infer.system import PseudoCoT
from pseudocot.records import Record, asked


@dataclass(frozen=True)
class Need:
    """The tokens a request needs on one model: its prompt, what is written into it, and whether
    the prompt's count is exact or only a lower bound."""

    prompt: int
    written: int
    exact: bool = True

    @property
    def total(self) -> int:
        return self.prompt + self.written


class ContextLimit:
    """Counts a request's tokens against the context of a loaded system."""

    def __init__(self, system: PseudoCoT) -> None:
        self.system = system
        # Its own copy: the batch worker's thread tokenizes with the system's at the same time.
        self.tokenizer = copy.deepcopy(system.tokenizer)
        self.length = min(m.config.get_text_config().max_position_embeddings for m in (system.base, system.ttm))
        special = set(self.tokenizer.get_added_vocab())
        longest_first = sorted(special, key=len, reverse=True)
        self.special = re.compile("|".join(map(re.escape, longest_first))) if special else None
        self.longest = max(len(t) for t in self.tokenizer.get_vocab() if t not in special)
        self._templates: dict[tuple[int, int], list[int]] = {}

    def quick(
        self, record: Record, history: Sequence[tuple[str, str]], thoughts: int, preset: GenerationPreset
    ) -> Need | None:
        """The request's need where a bound settles it (over the context: a lower bound; within it:
        an upper bound), else ``None``: then :meth:`count` must tell."""
        base_written, ttm_written = self._written(record, thoughts, preset)
        texts = [prompts.format_question(record, self.system.protocol.answer_style)]
        texts += [text for turn in history for text in turn]
        answer_text = self._answer(record)  # in the base's last prompt once per answer
        at_least = sum(map(self._fewest_tokens, texts)) + (thoughts + 1) * self._fewest_tokens(answer_text)
        if at_least + base_written > self.length:
            return Need(at_least, base_written, exact=False)
        answer = len(answer_text.encode())
        # The texts in the base's last prompt (history, question, answers) and in the TTM's (question, answers).
        text_bytes = (
            sum(len(t.encode()) for t in texts) + (thoughts + 1) * answer,
            len(texts[0].encode()) + max(thoughts - 1, 0) * answer,
        )
        templates = self._template_bytes(len(history), thoughts)
        needs = [Need(t + b, w) for t, b, w in zip(templates, text_bytes, (base_written, ttm_written), strict=False)]
        most = max(needs, key=lambda n: n.total)
        return most if most.total <= self.length else None

    def count(
        self, record: Record, history: Sequence[tuple[str, str]], thoughts: int, preset: GenerationPreset
    ) -> Need:
        """The request's need on the model it fills most, its prompts tokenized."""
        base_written, ttm_written = self._written(record, thoughts, preset)
        texts = self._prompts(record, history, thoughts, self._answer(record), "")
        needs = [
            Need(len(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]), written)
            for text, written in zip(texts, (base_written, ttm_written), strict=False)
        ]
        return max(needs, key=lambda n: n.total)

    def refusal(self, need: Need, thoughts: int) -> str | None:
        """The error message for a need over the context (vLLM's wording), or ``None`` if it fits."""
        if need.total <= self.length:
            return None
        bound = "" if need.exact else "at least "
        return (
            f"This model's maximum context length is {self.length} tokens. However, you requested {bound}"
            f"{need.total} tokens ({bound}{need.prompt} in the messages, {need.written} for the answers and the "
            f"thoughts, up to {thoughts}). Please reduce the length of the messages, max_tokens or "
            "pseudocot.max_thoughts."
        )

    def _fewest_tokens(self, text: str) -> int:
        """Fewest tokens ``text`` can take: its special tokens, one each, and the rest in tokens as long
        as the longest."""
        found = self.special.findall(text) if self.special else []
        return len(found) + math.ceil((len(text) - sum(map(len, found))) / self.longest)

    def _written(self, record: Record, thoughts: int, preset: GenerationPreset) -> tuple[int, int]:
        """Tokens written into the base's last prompt and into the TTM's: answers (none where options
        are only scored) and thoughts."""
        answer = preset.max_new_tokens if not record.choices or self.system.answer_mode == "generate" else 0
        thought = self.system.ttm_preset.max_new_tokens
        return thoughts * (answer + thought) + answer, max(thoughts - 1, 0) * (answer + thought) + thought

    def _answer(self, record: Record) -> str:
        """The longest answer turn the base's answers are placed as: an option's (empty for free text)."""
        style = self.system.protocol.answer_style
        return max((prompts.format_answer(record, c, style) for c in range(len(record.choices))), key=len, default="")

    def _prompts(
        self, record: Record, history: Sequence[tuple[str, str]], thoughts: int, answer: str, thought: str
    ) -> list[str]:
        """The base's last prompt, its last answer included, and the TTM's last prompt (where it thinks)."""
        protocol, tokenizer = self.system.protocol, self.tokenizer
        style, one_shot = protocol.answer_style, protocol.one_shot
        base = prompts.base_messages(record, [answer] * thoughts, [thought] * thoughts, one_shot, style, history)
        texts = [prompts.render(tokenizer, base, completion=answer)]
        if thoughts:
            earlier = thoughts - 1
            ttm = prompts.thought_messages(record, [(thought, answer)] * earlier, one_shot, style)
            texts.append(prompts.render(tokenizer, ttm))
        return texts

    def _template_bytes(self, turns: int, thoughts: int) -> list[int]:
        """Bytes of the base's last prompt less its texts, and of the TTM's where it thinks, for a
        history of ``turns`` exchanges: rendered once with one-character texts (a template may drop
        an empty turn)."""
        if (turns, thoughts) not in self._templates:
            x = asked("x", "api", "x")
            texts = self._prompts(x, [("x", "x")] * turns, thoughts, "x", "x")
            # The one-character texts: question, history, answers and thoughts, and the base's last answer.
            counts = (2 + 2 * turns + 2 * thoughts, 2 * thoughts - 1)
            self._templates[turns, thoughts] = [len(t.encode()) - c for t, c in zip(texts, counts, strict=False)]
        return self._templates[turns, thoughts]

"""The pseudo-CoT loop (paper 2, 3): the base answers, the policy decides, the TTM thinks, the base answers again.

For all of a call's questions at once (:func:`run`):

1. the base answers (:func:`answer`: multiple choice scored by likelihood, or written; free text written);
2. the policy (the router, or a baseline) looks at each answer and says stop or think; after
   ``limit`` thoughts a question stops whatever it says;
3. for each question still thinking, the TTM writes a thought from the question and its earlier
   thoughts with the base's answers to them (:func:`think`); the thought joins the base's
   conversation as a user turn, and the base answers again.

Questions leave the batch as their policy stops them, so later rounds run only on the rest. The
base's key/value cache is kept per question (:mod:`pseudocot.infer.prefix_cache`), so each round it
reads only the new turns. Those caches are held from round to round, so a call runs its questions a
chunk at a time: four batches (later rounds still fill a batch as questions leave), fewer where the
chunk's caches at their longest would pass the system's ``kv_cache_bytes``; each chunk's caches are
freed before the next one starts. The section-2 variant (:func:`thought_first`) has the TTM write its
reasoning first and the base answer once.

What one call needs besides the system (its questions, results, chat history, decoding, cancellation,
caches) travels in a :class:`Call`; nothing of a call is kept on the system. Every result carries the
final answer, every thought and intermediate answer, the policy's scores and each model's token
counts; cost is FLOPs = 2 x parameters x tokens per model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch

from pseudocot import prompts
from pseudocot.config import GenerationPreset
from pseudocot.infer.answer_modes import Answers, free_text, scored, written
from pseudocot.infer.generate import generate
from pseudocot.infer.prefix_cache import ConversationCache
from pseudocot.infer.router import AnswerState, Policy
from pseudocot.memory import LOOP_BATCHES, Shape
from pseudocot.records import LETTERS, Record

if TYPE_CHECKING:
    from pseudocot.infer.system import PseudoCoT

TURN_TOKENS = 32  # a chat template's tokens around one turn (role header, end of turn), at most
OnStep = Callable[[int, str, str], None]  # (question index, "answer" or "thought", text)
OnState = Callable[[list[int], AnswerState], None]  # (question indices, their answers' features)


@dataclass
class Usage:
    """Tokens one model processed for a question: prompt (read) and generated (written)."""

    prompt: int = 0
    generated: int = 0

    @property
    def total(self) -> int:
        return self.prompt + self.generated


@dataclass
class Result:
    """The pseudo-CoT system's work on one question."""

    id: str
    answer: str  # the final answer text
    choice: int | None  # the final option index (multiple choice)
    answers: list[str] = field(default_factory=list)  # every answer of the base, first to last
    choices: list[int | None] = field(default_factory=list)
    thoughts: list[str] = field(default_factory=list)  # the TTM's thoughts, in order
    scores: list[float] = field(default_factory=list)  # the policy's score after each answer it judged
    confidence: list[list[float]] = field(default_factory=list)  # the base's option probabilities per answer
    usage: dict[str, Usage] = field(default_factory=lambda: {"base": Usage(), "ttm": Usage()})
    base_tokens: list[int] = field(default_factory=list)  # tokens the base processed for each answer
    ttm_tokens: list[int] = field(default_factory=list)  # tokens the TTM processed for each thought
    truncated: bool = False  # the last free-text answer ran into its max_new_tokens
    thoughts_cut: int = 0  # thoughts that ran into the TTM preset's max_new_tokens before an end of turn
    flops: float = 0.0

    @property
    def letter(self) -> str | None:
        """The final option's letter (multiple choice)."""
        return LETTERS[self.choice] if self.choice is not None else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["letter"] = self.letter
        return data


@dataclass
class Call:
    """One call of the loop: its questions, their results so far, and the settings of this call only."""

    records: Sequence[Record]
    base_preset: GenerationPreset  # decoding of the base's written answers
    history: Sequence[tuple[str, str]] = ()  # earlier (question, answer) exchanges of a chat session
    cancelled: Callable[[int], bool] | None = None  # cancelled(i): question i's client went away
    cache: ConversationCache | None = None  # the base's key/value cache per question (None: off)
    results: list[Result] = field(init=False)

    def __post_init__(self) -> None:
        self.results = [Result(id=r.id, answer="", choice=None) for r in self.records]

    def stopped(self, rows: list[int]) -> Callable[[int], bool] | None:
        """``generate``'s check of whether the question of its prompt ``k`` (``rows[k]``) was cancelled."""
        cancelled = self.cancelled
        return None if cancelled is None else lambda k: cancelled(rows[k])


def run(
    system: PseudoCoT,
    call: Call,
    policy: Policy,
    limit: int,
    on_step: OnStep | None = None,
    on_state: OnState | None = None,
) -> list[Result]:
    """The loop on the call's questions, a chunk at a time (:func:`chunk_size`: the base's key/value caches
    held at once stay bounded however many questions are asked)."""
    chunk = chunk_size(system, call, limit)
    for start in range(0, len(call.records), chunk):
        active = list(range(start, min(start + chunk, len(call.records))))
        step = 0
        while active:
            if call.cancelled:
                active = [i for i in active if not call.cancelled(i)]
                if not active:
                    break
            state = answer(system, call, active, features=step < limit or on_state is not None)
            if on_state:
                on_state(list(active), state)
            for i in active:
                if on_step:
                    on_step(i, "answer", call.results[i].answers[-1])
            if step >= limit:
                break
            scores, thinking = policy.decide(state)
            for k, i in enumerate(active):
                call.results[i].scores.append(float(scores[k]))
                if not thinking[k] and call.cache is not None:
                    call.cache.entries.pop(i, None)  # done: its cache is not needed again
            active = [i for k, i in enumerate(active) if thinking[k]]
            if active:
                think(system, call, active)
                for i in active:
                    if on_step:
                        on_step(i, "thought", call.results[i].thoughts[-1])
            step += 1
        if call.cache is not None:
            call.cache.clear()
    return [finish(system, r) for r in call.results]


def chunk_size(system: PseudoCoT, call: Call, limit: int) -> int:
    """Questions run through the loop at once: four batches, or as many as :func:`question_kv_bytes` fit in
    the system's key/value budget (at least one)."""
    most = LOOP_BATCHES * system.batch_size
    if call.cache is None or not call.records:  # without the cache nothing is held from round to round
        return most
    return max(1, min(most, system.kv_budget() // question_kv_bytes(system, call, limit)))


def question_kv_bytes(system: PseudoCoT, call: Call, limit: int) -> int:
    """The most key/value cache one of the call's questions can hold: its longest first prompt, then
    ``limit + 1`` answers of the base preset's new tokens and ``limit`` thoughts of the TTM's, each turn with
    its template's header (:data:`TURN_TOKENS`)."""
    first = [prompts.answer_prompt(system.tokenizer, _conversation(system, call, i)) for i in range(len(call.records))]
    prompt = max(len(system.tokenizer(text, add_special_tokens=False)["input_ids"]) for text in first)
    answer, thought = call.base_preset.max_new_tokens, system.ttm_preset.max_new_tokens
    tokens = prompt + (limit + 1) * (answer + TURN_TOKENS) + limit * (thought + TURN_TOKENS)
    return Shape.of(system.base.config).kv_bytes(tokens, system.base.dtype.itemsize)


def thought_first(system: PseudoCoT, call: Call) -> list[Result]:
    """The section-2 variant: the TTM writes its reasoning, then the base answers once."""
    everyone = list(range(len(call.records)))
    think(system, call, everyone)
    answer(system, call, everyone, features=False)
    return [finish(system, r) for r in call.results]


def answer(system: PseudoCoT, call: Call, active: list[int], features: bool = True) -> AnswerState:
    """The base answers every active question (one round); returns the features of those answers.

    With ``features`` false (no decision follows: a plain model, the thought-first variant) and
    ``answer_mode: generate``, multiple-choice options are not scored: only the written answer
    counts, as for any chat model, and its cost is the generation alone.
    """
    options = [i for i in active if call.records[i].choices]
    free = [i for i in active if not call.records[i].choices]
    given: dict[int, tuple[Answers, int]] = {}  # question -> its answer: (the batch's answers, row)
    if options:
        answers = _answer_options(system, call, options, features)
        given |= {i: (answers, k) for k, i in enumerate(options)}
    if free:
        conversations = [_conversation(system, call, i) for i in free]
        preset, stopped = call.base_preset, call.stopped(free)
        answers = free_text(system.base, system.tokenizer, conversations, preset, system.batch_size, stopped)
        given |= {i: (answers, k) for k, i in enumerate(free)}
    for i in active:
        _record(call.results[i], *given[i])
    return _features(system, call, active, given)


def _answer_options(system: PseudoCoT, call: Call, rows: list[int], features: bool) -> Answers:
    """Multiple choice: scored (``answer_mode: score``), or written and, where a decision follows,
    scored too for the router's features (the scoring pass counts into the answer's cost)."""
    conversations = [_conversation(system, call, i) for i in rows]
    records = [call.records[i] for i in rows]
    style = system.protocol.answer_style
    scores = None
    if system.answer_mode == "score" or features:
        scores = scored(
            system.base, system.tokenizer, conversations, records, style, system.batch_size, call.cache, rows
        )
    if system.answer_mode == "score":
        return scores
    said = written(
        system.base, system.tokenizer, conversations, records, call.base_preset, system.batch_size, call.stopped(rows)
    )
    if scores is None:
        return said
    read = [s + w for s, w in zip(scores.read, said.read, strict=True)]
    return replace(said, read=read, hidden=scores.hidden, confidence=scores.confidence)


def _conversation(system: PseudoCoT, call: Call, i: int) -> list[prompts.Message]:
    """Question ``i``'s conversation with the base, up to its next answer. In the loop the first answer
    precedes the first thought; in the thought-first variant the thought comes straight after the question."""
    result, protocol = call.results[i], system.protocol
    return prompts.base_messages(
        call.records[i], result.answers, result.thoughts, protocol.one_shot, protocol.answer_style, call.history
    )


def _record(result: Result, answers: Answers, k: int) -> None:
    """Adds the ``k``-th of ``answers`` to a question's result."""
    result.answers.append(answers.texts[k])
    result.choices.append(answers.choices[k])
    result.usage["base"].prompt += answers.read[k]
    result.usage["base"].generated += answers.written[k]
    result.base_tokens.append(answers.read[k] + answers.written[k])
    result.truncated = answers.truncated[k]
    if answers.confidence is not None:  # none is measured for an answer that was only written
        result.confidence.append([round(float(p), 4) for p in answers.confidence[k]])


def _features(system: PseudoCoT, call: Call, active: list[int], given: dict[int, tuple[Answers, int]]) -> AnswerState:
    """What the policy reads off the round's answers. An answer only written has no hidden state (zeros)
    and no confidence (uniform over its options)."""
    hidden, probs = [], []
    for i in active:
        answers, k = given[i]
        if answers.confidence is None:
            n = len(call.records[i].choices)
            hidden.append(torch.zeros(system.base.config.hidden_size))
            probs.append(torch.full((n,), 1 / n))
        else:
            hidden.append(answers.hidden[k])
            probs.append(answers.confidence[k])
    padded = torch.zeros((len(active), max(p.shape[0] for p in probs)))  # (N, C)
    for k, p in enumerate(probs):
        padded[k, : p.shape[0]] = p
    results = [call.results[i] for i in active]
    steps = torch.tensor([len(r.thoughts) for r in results])
    # Whether the base changed its mind: its pick where it has options, else its text.
    changed = torch.tensor(
        [
            len(r.answers) > 1
            and (r.choices[-1] != r.choices[-2] if call.records[i].choices else r.answers[-1] != r.answers[-2])
            for i, r in zip(active, results, strict=True)
        ]
    )
    return AnswerState(torch.stack(hidden), padded, steps, changed)


def think(system: PseudoCoT, call: Call, active: list[int]) -> None:
    """The TTM writes one thought for every active question."""
    texts = []
    for i in active:
        earlier, answers = call.results[i].thoughts, call.results[i].answers
        # The base's answer to each earlier thought is the answer that followed it.
        exchanges = list(zip(earlier, answers[len(answers) - len(earlier) :], strict=True))
        protocol = system.protocol
        messages = prompts.thought_messages(call.records[i], exchanges, protocol.one_shot, protocol.answer_style)
        texts.append(prompts.render(system.tokenizer, messages))
    out = generate(
        system.ttm, system.tokenizer, texts, system.ttm_preset, system.batch_size, stopped=call.stopped(active)
    )
    for k, i in enumerate(active):
        result = call.results[i]
        result.thoughts.append(out.texts[k])
        result.usage["ttm"].prompt += out.prompt_tokens[k]
        result.usage["ttm"].generated += out.generated_tokens[k]
        result.ttm_tokens.append(out.prompt_tokens[k] + out.generated_tokens[k])
        result.thoughts_cut += out.truncated[k]


def flops(parameters: int, tokens: int) -> float:
    """A model's cost for the tokens it processed: 2 x parameters x tokens (forward pass)."""
    return float(2 * parameters * tokens)


def finish(system: PseudoCoT, result: Result) -> Result:
    """The result's final answer (its last) and its cost."""
    result.answer = result.answers[-1] if result.answers else ""
    result.choice = result.choices[-1] if result.choices else None
    result.flops = sum(flops(system.parameters[m], u.total) for m, u in result.usage.items())
    return result

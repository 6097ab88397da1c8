"""The pseudo-CoT loop (paper 2, 3): the base answers, the router decides, the TTM adds a thought.

Given questions, :meth:`PseudoCoT.run` does, for all of them at once:

1. the base answers (multiple choice: options scored by likelihood, as in evaluation; free text:
   the base generates with its decoding preset);
2. the policy (the router, or a baseline) looks at each answer and says stop or think; after
   ``max_thoughts`` thoughts a question stops whatever it says;
3. for each question still thinking, the TTM writes a thought from the question and its earlier
   thoughts with the base's answers to them; the thought joins the base's conversation as a user
   turn, and the base answers again.

Questions leave the batch as their policy stops them, so later rounds run only on the rest. The
base's key/value cache is kept per question (:mod:`pseudocot.infer.prefix_cache`), so each round it
reads only the new turns, not the conversation again. The TTM's prompts are encoded anew each time
(``model.generate`` takes no ragged per-row prefix caches). The section-2 variant
(:meth:`PseudoCoT.thought_first`) has the TTM write its reasoning first and the base answer once.

Every result carries the final answer, every thought and intermediate answer, the policy's scores
and each model's token counts; cost is FLOPs = 2 x parameters x tokens per model. A system
directory (written by ``pseudocot router``) holds ``system.json`` naming the base, the TTM and the
protocol, and the router's weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from pseudocot import prompts
from pseudocot.config import GenerationPreset, ProtocolConfig
from pseudocot.data.records import LETTERS, Record
from pseudocot.errors import PseudoCoTError
from pseudocot.infer.choice import extract_choice, fold_common_prefix, score_options
from pseudocot.infer.generate import generate, left_pad
from pseudocot.infer.prefix_cache import ConversationCache
from pseudocot.infer.router import AnswerState, Policy, Router, make_policy
from pseudocot.models import check_same_tokenizer, load_model, load_tokenizer, pad_id
from pseudocot.stage import file_error, read_json

SYSTEM_FILE = "system.json"
CONFIDENCE_OPTIONS = 4  # free-text answers: the top-4 tokens where the answer is least sure
READOUT_BYTES = 256 * 2**20  # most memory a generation batch may keep for reading its confidence off


def read_system(system_dir: Path) -> dict[str, Any]:
    """A system directory's ``system.json``, its protocol and presets parsed into their config types.

    Raises:
        PseudoCoTError: the directory is not a system, or ``system.json`` is damaged (not JSON, a key
            missing, a setting out of range), named with the command that rewrites it.
    """
    path = Path(system_dir) / SYSTEM_FILE
    if not path.is_file():
        raise PseudoCoTError(f"{system_dir} is not a pseudo-CoT system ({SYSTEM_FILE} missing); run the router stage.")
    spec = read_json(path, ("base", "ttm", "max_thoughts", "protocol", "base_preset", "ttm_preset"))
    try:
        parsed = {"protocol": ProtocolConfig(**spec["protocol"])}
        parsed |= {k: GenerationPreset(**spec[k]) for k in ("base_preset", "ttm_preset")}
    except (TypeError, ValueError):  # pydantic's ValidationError is a ValueError
        raise file_error(path, "is damaged (its protocol or presets do not validate)") from None
    return spec | parsed


def _least_sure(logp: torch.Tensor, answer: list[int]) -> torch.Tensor:
    """The top probabilities at the step (rows of ``logp``, one per answer token) where the answer's
    own token was least likely."""
    own = logp[torch.arange(len(answer)), torch.tensor(answer)]
    return logp[int(own.argmin())].exp().topk(CONFIDENCE_OPTIONS).values


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
    flops: float = 0.0

    @property
    def letter(self) -> str | None:
        """The final option's letter (multiple choice)."""
        return LETTERS[self.choice] if self.choice is not None else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["letter"] = self.letter
        return data


class PseudoCoT:
    """A base, a Tiny Thought Model and a policy (the router by default), joined by the loop."""

    def __init__(
        self,
        base: PreTrainedModel,
        ttm: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        protocol: ProtocolConfig,
        router: Router | None = None,
        max_thoughts: int = 2,
        base_preset: GenerationPreset | None = None,
        ttm_preset: GenerationPreset | None = None,
        batch_size: int = 32,
        kv_cache: bool = True,
        answer_mode: str = "score",
    ) -> None:
        self.base, self.ttm, self.tokenizer = base.eval(), ttm.eval(), tokenizer
        self.kv_cache = kv_cache
        if answer_mode not in ("score", "generate"):
            raise ValueError(f"answer_mode must be 'score' or 'generate', not {answer_mode!r}")
        self.answer_mode = answer_mode
        self._cache = ConversationCache(self.base, pad_id(tokenizer))
        self.protocol = protocol
        self.router = router
        self.max_thoughts = max_thoughts
        self.base_preset = base_preset or GenerationPreset(max_new_tokens=32)
        self.ttm_preset = ttm_preset or GenerationPreset(max_new_tokens=128)
        self.batch_size = batch_size
        self.parameters = {"base": base.num_parameters(), "ttm": ttm.num_parameters()}
        self._history: list[tuple[str, str]] = []
        self._base_preset = self.base_preset
        self._cancelled: Callable[[int], bool] | None = None

    # -- loading ------------------------------------------------------------------------------

    @classmethod
    def load(cls, system_dir: str | Path, base: str | None = None, **overrides: Any) -> PseudoCoT:
        """The system a ``pseudocot router`` run wrote (``system.json`` and the router's weights).

        Args:
            base: a model (directory or hub id) to use in place of the system's base, e.g. the base
                before its fine-tune; it must share the TTM's tokenizer.
        """
        system_dir = Path(system_dir)
        spec = read_system(system_dir)

        def resolve(ref: str) -> str:
            path = system_dir / ref
            return str(path.resolve()) if path.exists() else ref

        base_ref, ttm_ref = base or resolve(spec["base"]), resolve(spec["ttm"])
        tokenizer = load_tokenizer(base_ref)
        check_same_tokenizer(load_tokenizer(ttm_ref), tokenizer, f"the TTM {ttm_ref}", f"the base {base_ref}")
        kwargs: dict[str, Any] = {
            "router": Router.load(system_dir),
            "max_thoughts": spec["max_thoughts"],
            "base_preset": spec["base_preset"],
            "ttm_preset": spec["ttm_preset"],
        }
        return cls(load_model(base_ref), load_model(ttm_ref), tokenizer, spec["protocol"], **kwargs | overrides)

    # -- the two ways of thinking ---------------------------------------------------------------

    def run(
        self,
        records: Sequence[Record],
        policy: Policy | str | None = None,
        max_thoughts: int | None = None,
        on_step: Callable[[int, str, str], None] | None = None,
        on_state: Callable[[list[int], AnswerState], None] | None = None,
        history: Sequence[tuple[str, str]] = (),
        cancelled: Callable[[int], bool] | None = None,
        base_preset: GenerationPreset | None = None,
    ) -> list[Result]:
        """The pseudo-CoT loop on ``records``; ``policy`` defaults to the system's router.

        Args:
            policy: a :class:`Policy` or its name (``router``, ``never``, ``always``, ``random:R``,
                ``entropy:H``).
            max_thoughts: most thoughts per question (default: the system's).
            on_step: called as ``on_step(index, kind, text)`` with kind ``answer`` or ``thought``
                as each is produced (for chat and streaming).
            on_state: called as ``on_state(indices, state)`` with the features of each round's
                answers (router training collects them).
            history: earlier ``(question, answer)`` exchanges of a chat session, shown to the base
                before each question.
            cancelled: ``cancelled(index)`` is checked before each round and after every generated
                token; a question it is true for leaves the loop (a client that went away), its
                result as far as it got.
            base_preset: decoding of the base's free-text answers for this call (default: the system's).
        """
        self._history = list(history)
        self._cache.clear()
        if policy is None or isinstance(policy, str):
            policy = make_policy(policy or ("router" if self.router else "never"), self.router)
        limit = self.max_thoughts if max_thoughts is None else max_thoughts
        self._base_preset = base_preset or self.base_preset
        self._cancelled = cancelled
        results = [Result(id=r.id, answer="", choice=None) for r in records]
        # Questions go through the loop a few batches at a time, so the base's key/value caches held
        # at once stay bounded however many questions are asked.
        chunk = 4 * self.batch_size
        for start in range(0, len(records), chunk):
            active = list(range(start, min(start + chunk, len(records))))
            self._loop(records, results, active, policy, limit, on_step, on_state, cancelled)
            self._cache.clear()
        return [self._finish(r) for r in results]

    def _loop(
        self,
        records: Sequence[Record],
        results: list[Result],
        active: list[int],
        policy: Policy,
        limit: int,
        on_step: Callable[[int, str, str], None] | None,
        on_state: Callable[[list[int], AnswerState], None] | None,
        cancelled: Callable[[int], bool] | None,
    ) -> None:
        """Rounds of answer, decision and thought for the questions ``active`` (indices into ``records``)."""
        step = 0
        while active:
            if cancelled:
                active = [i for i in active if not cancelled(i)]
                if not active:
                    break
            decides = step < limit or on_state is not None
            state = self._answer(records, results, active, features=decides)
            if on_state:
                on_state(list(active), state)
            for i in active:
                if on_step:
                    on_step(i, "answer", results[i].answers[-1])
            if step >= limit:
                break
            scores, think = policy.decide(state)
            for k, i in enumerate(active):
                results[i].scores.append(float(scores[k]))
                if not think[k]:
                    self._cache.entries.pop(i, None)  # done: its cache is not needed again
            active = [i for k, i in enumerate(active) if think[k]]
            if active:
                self._think(records, results, active)
                for i in active:
                    if on_step:
                        on_step(i, "thought", results[i].thoughts[-1])
            step += 1

    def thought_first(self, records: Sequence[Record]) -> list[Result]:
        """The section-2 variant: the TTM writes its reasoning, then the base answers once."""
        self._history = []
        self._cancelled = None
        self._cache.clear()
        results = [Result(id=r.id, answer="", choice=None) for r in records]
        everyone = list(range(len(records)))
        self._think(records, results, everyone)
        self._answer(records, results, everyone, features=False)
        return [self._finish(r) for r in results]

    # -- one round ----------------------------------------------------------------------------

    def _stopped(self, rows: list[int]) -> Callable[[int], bool] | None:
        """``generate``'s check, after every token, of whether the question of its prompt ``k``
        (``rows[k]``) was cancelled."""
        cancelled = self._cancelled
        return None if cancelled is None else lambda k: cancelled(rows[k])

    def _base_messages(self, record: Record, result: Result) -> list[dict[str, str]]:
        # In the loop the first answer precedes the first thought; in the thought-first variant
        # the thought comes straight after the question.
        return prompts.base_messages(
            record, result.answers, result.thoughts, self.protocol.one_shot, self.protocol.answer_style, self._history
        )

    def _answer(
        self, records: Sequence[Record], results: list[Result], active: list[int], features: bool = True
    ) -> AnswerState:
        """The base answers every active question; returns the features of those answers.

        With ``features`` false (no decision follows: a plain model, the thought-first variant) and
        ``answer_mode: generate``, multiple-choice options are not scored: only the written answer
        counts, as for any chat model, and its cost is the generation alone.
        """
        choice_rows = [i for i in active if records[i].choices]
        free_rows = [i for i in active if not records[i].choices]
        hidden: dict[int, torch.Tensor] = {}
        probs: dict[int, torch.Tensor] = {}
        unscored = set(choice_rows) if self.answer_mode == "generate" and not features else set()
        if unscored:
            for i, written in zip(choice_rows, self._write_answers(records, results, choice_rows), strict=True):
                self._take_written(records[i], results[i], written)
                hidden[i] = torch.zeros(self.base.config.hidden_size)
                probs[i] = torch.full((len(records[i].choices),), 1 / len(records[i].choices))
        elif choice_rows:
            self._answer_choices(records, results, choice_rows, hidden, probs)
        if free_rows:
            self._answer_free(records, results, free_rows, hidden, probs)
        width = max(p.shape[0] for p in probs.values())
        padded = torch.zeros((len(active), width))
        for k, i in enumerate(active):
            padded[k, : probs[i].shape[0]] = probs[i]
            if i not in unscored:  # no confidence was measured for an answer that was only written
                results[i].confidence.append([round(float(p), 4) for p in probs[i]])
        steps = torch.tensor([len(results[i].thoughts) for i in active])
        # Whether the base changed its mind: its pick where it has options, else its text.
        changed = torch.tensor(
            [
                len(results[i].answers) > 1
                and (
                    results[i].choices[-1] != results[i].choices[-2]
                    if records[i].choices
                    else results[i].answers[-1] != results[i].answers[-2]
                )
                for i in active
            ]
        )
        return AnswerState(torch.stack([hidden[i] for i in active]), padded, steps, changed)

    def _answer_choices(
        self,
        records: Sequence[Record],
        results: list[Result],
        rows: list[int],
        hidden: dict[int, torch.Tensor],
        probs: dict[int, torch.Tensor],
    ) -> None:
        """Multiple choice: the base's options are scored by likelihood, as in evaluation.

        Where every option is one token past the options' shared start (digits, letters), one
        forward pass through the question's cached conversation scores them all; otherwise each
        option is scored in full without the cache.
        """
        style = self.protocol.answer_style
        texts = [prompts.answer_prompt(self.tokenizer, self._base_messages(records[i], results[i])) for i in rows]
        options = [prompts.answer_options(records[i], style) for i in rows]
        logp = torch.full((len(rows), max(len(o) for o in options)), float("-inf"))
        states = torch.zeros((len(rows), self.base.config.hidden_size))
        tokens = [0] * len(rows)
        plain: list[int] = []
        cached: list[tuple[int, list[int], list[int]]] = []  # (row, prompt ids, option token ids)
        for k, (text, opts) in enumerate(zip(texts, options, strict=True)):
            encode = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            prompt_ids, rest = fold_common_prefix(
                encode, [self.tokenizer(o, add_special_tokens=False)["input_ids"] for o in opts]
            )
            if self.kv_cache and all(len(r) == 1 for r in rest):
                cached.append((k, prompt_ids, [r[0] for r in rest]))
            else:
                plain.append(k)
        for start in range(0, len(cached), self.batch_size):
            chunk = cached[start : start + self.batch_size]
            out, states_chunk, ran = self._cache.extend([rows[k] for k, _, _ in chunk], [ids for _, ids, _ in chunk])
            for j, (k, _, targets) in enumerate(chunk):
                logp[k, : len(targets)] = out[j, targets]
                states[k], tokens[k] = states_chunk[j], ran[j]
        if plain:
            scores = score_options(
                self.base, self.tokenizer, [texts[k] for k in plain], [options[k] for k in plain], self.batch_size, True
            )
            for j, k in enumerate(plain):
                logp[k, : scores.logprobs.shape[1]] = scores.logprobs[j]
                states[k], tokens[k] = scores.hidden[j], scores.tokens[j]
        confidence = logp.softmax(-1)  # (N, C)
        written = self._write_answers(records, results, rows) if self.answer_mode == "generate" else None
        for k, i in enumerate(rows):
            record, result = records[i], results[i]
            result.usage["base"].prompt += tokens[k]  # the scoring pass
            if written is None:
                choice = int(confidence[k].argmax())
                result.choices.append(choice)
                result.answers.append(prompts.format_answer(record, choice, style))
                result.base_tokens.append(tokens[k])
            else:
                self._take_written(record, result, written[k], tokens[k])
            hidden[i], probs[i] = states[k], confidence[k, : len(record.choices)]

    @staticmethod
    def _take_written(record: Record, result: Result, written: tuple[str, int, int, bool], scored: int = 0) -> None:
        """Records an answer the base wrote to a multiple-choice question (the option it names, if one)."""
        text, n_prompt, n_generated, truncated = written
        result.answers.append(text)
        result.choices.append(extract_choice(text, record.choices))
        result.usage["base"].prompt += n_prompt
        result.usage["base"].generated += n_generated
        result.base_tokens.append(scored + n_prompt + n_generated)
        result.truncated = truncated

    def _write_answers(
        self, records: Sequence[Record], results: list[Result], rows: list[int]
    ) -> list[tuple[str, int, int, bool]]:
        """``answer_mode: generate``: the base writes its answer to each multiple-choice question, as
        a chat model answers a user (the option is read off the text; none when it names none).
        Returns (text, prompt tokens, generated tokens, truncated) per row; the option scores above
        still give the router its features."""
        texts = [prompts.render(self.tokenizer, self._base_messages(records[i], results[i])) for i in rows]
        out = generate(
            self.base, self.tokenizer, texts, self._base_preset, self.batch_size, stopped=self._stopped(rows)
        )
        return [
            (out.texts[k], out.prompt_tokens[k], out.generated_tokens[k], out.truncated[k]) for k in range(len(rows))
        ]

    def _answer_free(
        self,
        records: Sequence[Record],
        results: list[Result],
        rows: list[int],
        hidden: dict[int, torch.Tensor],
        probs: dict[int, torch.Tensor],
    ) -> None:
        """Free-text questions: the base generates its answer; its confidence is the top
        probabilities at the answer's step where its own token was least likely.

        Those probabilities and the hidden state at the prompt's end are read off the generation
        itself where they fit in :data:`READOUT_BYTES` (one beam), else off one more batched pass
        over prompt and answer (:meth:`_answer_confidence`); the two agree (tested)."""
        texts = [prompts.render(self.tokenizer, self._base_messages(records[i], results[i])) for i in rows]
        preset = self._base_preset
        config = self.base.config.get_text_config()
        steps, layers, width = preset.max_new_tokens, config.num_hidden_layers, config.hidden_size
        prompt_bound = max(len(t.encode()) for t in texts)  # a byte-level tokenizer's tokens are bytes at most
        # Kept for one generation batch: the steps' logits (and one copy), every layer's hidden states,
        # the key/value cache.
        per_row = 4 * (2 * steps * config.vocab_size + (3 * layers + 1) * width * (prompt_bound + steps))
        fits = per_row * min(len(rows), self.batch_size) <= READOUT_BYTES
        readout = _least_sure if preset.num_beams == 1 and fits else None
        out = generate(
            self.base, self.tokenizer, texts, preset, self.batch_size, readout=readout, stopped=self._stopped(rows)
        )
        for k, i in enumerate(rows):
            results[i].choices.append(None)
            results[i].answers.append(out.texts[k])
            results[i].usage["base"].prompt += out.prompt_tokens[k]
            results[i].usage["base"].generated += out.generated_tokens[k]
            results[i].base_tokens.append(out.prompt_tokens[k] + out.generated_tokens[k])
            results[i].truncated = out.truncated[k]
        if readout:
            for k, i in enumerate(rows):
                hidden[i], probs[i] = out.readouts[k]
            return
        prompt_ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        longest = max(len(p) + len(a) for p, a in zip(prompt_ids, out.answer_ids, strict=True))
        keep = max(len(a) for a in out.answer_ids) + 1
        per_row = 4 * (2 * longest * getattr(config, "intermediate_size", 4 * width) + 2 * keep * config.vocab_size)
        size = max(1, min(self.batch_size, READOUT_BYTES // per_row))
        for start in range(0, len(rows), size):
            chunk = range(start, min(start + size, len(rows)))
            states, tops = self._answer_confidence([prompt_ids[k] for k in chunk], [out.answer_ids[k] for k in chunk])
            for j, k in enumerate(chunk):
                hidden[rows[k]], probs[rows[k]] = states[j], tops[j]

    @torch.inference_mode()
    def _answer_confidence(
        self, prompt_ids: list[list[int]], answer_ids: list[list[int]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """For each prompt and the answer the base wrote to it (token ids), in one forward pass: the
        last hidden state at the prompt's end (B, H), and the top probabilities where the answer's
        own token was least likely (B, CONFIDENCE_OPTIONS).

        Rows are left-padded so every answer ends at the last position: logits are computed over
        the longest answer only, and only the last layer's hidden states are kept."""
        ids, mask = left_pad([p + a for p, a in zip(prompt_ids, answer_ids, strict=True)], pad_id(self.tokenizer))
        width = ids.shape[1]
        keep = max(len(a) for a in answer_ids) + 1  # the prompt's last position predicts the first answer token
        device = self.base.device
        last: list[torch.Tensor] = []
        hook = self.base.get_decoder().register_forward_hook(lambda _m, _a, o: last.append(o[0]))
        try:
            out = self.base(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                position_ids=(mask.cumsum(-1) - 1).clamp(min=0).to(device),
                use_cache=False,
                logits_to_keep=keep,
            )
        finally:
            hook.remove()
        logits = out.logits[:, -keep:]  # (B, keep, V)
        states = torch.zeros((len(answer_ids), self.base.config.hidden_size))
        tops = torch.zeros((len(answer_ids), CONFIDENCE_OPTIONS))
        for r, answer in enumerate(answer_ids):
            before = keep - len(answer) - 1  # window index of the prompt's last position
            window = logits[r, before : before + len(answer)].float().log_softmax(-1).cpu()
            tops[r] = _least_sure(window, answer)
            states[r] = last[-1][r, width - len(answer) - 1].float().cpu()
        return states, tops

    def _think(self, records: Sequence[Record], results: list[Result], active: list[int]) -> None:
        """The TTM writes one thought for every active question."""
        texts = []
        for i in active:
            earlier = results[i].thoughts
            # The base's answer to each earlier thought is the answer that followed it.
            replies = results[i].answers[len(results[i].answers) - len(earlier) :] if earlier else []
            messages = prompts.thought_messages(
                records[i], earlier, replies, self.protocol.one_shot, self.protocol.answer_style
            )
            texts.append(prompts.render(self.tokenizer, messages))
        out = generate(self.ttm, self.tokenizer, texts, self.ttm_preset, self.batch_size, stopped=self._stopped(active))
        for k, i in enumerate(active):
            results[i].thoughts.append(out.texts[k])
            results[i].usage["ttm"].prompt += out.prompt_tokens[k]
            results[i].usage["ttm"].generated += out.generated_tokens[k]
            results[i].ttm_tokens.append(out.prompt_tokens[k] + out.generated_tokens[k])

    def _finish(self, result: Result) -> Result:
        result.answer = result.answers[-1] if result.answers else ""
        result.choice = result.choices[-1] if result.choices else None
        result.flops = float(sum(2 * self.parameters[m] * u.total for m, u in result.usage.items()))
        return result

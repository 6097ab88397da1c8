"""The thought protocol: the one place where prompts and conversations are built.

Training data, router rollouts, evaluation and serving all call these functions, so the base, the
teacher and the Tiny Thought Model (TTM) always see the same formats.

The protocol (our reading of the paper's "along with previous outputs and queries"):

* The **base** sees a system instruction, optionally a one-shot example of the output format, then
  the question as a user turn, and answers ``The answer is X.`` Two answer styles, as evaluation
  harnesses run MMLU: ``letter`` (the usual multiple-choice format: the lettered options follow the
  question and X is a letter) and ``cloze`` (the options are not shown and X is the option's text;
  options are scored by likelihood). Small models can use the cloze format long before they learn
  to map a value to its letter, so the tiny world uses it.
* A **thought** is shown to the base as its own user turn, ``Thought: ...``, placed after the
  base's previous answer (the pseudo-CoT loop) or straight after the question (the section-2
  variant, where the TTM writes its reasoning first). The base then answers again.
* The **teacher** and the **TTM** see the question as a user turn after their own system
  instruction and write reasoning (the reasoning set's target) as the assistant. In the loop, a
  TTM asked for a further thought sees its earlier thoughts as its own turns, each followed by the
  base's answer to it as a user turn (``Base answer: ...``).

Messages are lists of ``{"role", "content"}`` dicts; :func:`render` turns them into text with the
tokenizer's own chat template (Llama-3 structure for the tiny world and for Llama models). Templates that
reject a system turn or two turns of one role in a row (Gemma-2's, Mistral's) get the same conversation
folded: the system instruction opens the first user turn, and consecutive turns of one role are merged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from jinja2.exceptions import TemplateError
from transformers import PreTrainedTokenizerBase

from pseudocot.records import LETTERS, Record

Message = dict[str, str]
AnswerStyle = Literal["letter", "cloze"]

BASE_SYSTEM = "Answer with the correct option."
REASONING_SYSTEM = "Reason step by step."
ANSWER_PREFIX = "The answer is"
THOUGHT_PREFIX = "Thought:"
BASE_ANSWER_PREFIX = "Base answer:"
QA_SYSTEM = (
    "You write question-answer pairs for training a support assistant. Every answer must be stated in the "
    "passage; do not use outside knowledge."
)

_ONE_SHOT = Record(
    id="one-shot",
    source="prompts",
    question="What is 2 + 3?",
    choices=["4", "5", "6", "1"],
    answer="B",
    reasoning="2 + 3 = 5. So the result is 5.",
)


def format_question(record: Record, style: AnswerStyle = "letter") -> str:
    """The question, followed by its lettered options (one a line) in the ``letter`` style."""
    if style == "cloze" or not record.choices:
        return record.question
    options = "\n".join(f"{LETTERS[i]}. {choice}" for i, choice in enumerate(record.choices))
    return f"{record.question}\n{options}"


def answer_options(record: Record, style: AnswerStyle = "letter") -> list[str]:
    """What follows ``The answer is`` for each option: ``" A"``.. or ``" <option text>"``."""
    if style == "letter":
        return [f" {LETTERS[i]}" for i in range(len(record.choices))]
    return [f" {choice.strip()}" for choice in record.choices]


def format_answer(record: Record, choice: int | None = None, style: AnswerStyle = "letter") -> str:
    """The base's answer turn, ``The answer is B.``: option ``choice``, the gold one by default."""
    if not record.choices:
        return record.answer
    index = record.answer_index if choice is None else choice
    return f"{ANSWER_PREFIX}{answer_options(record, style)[index]}."


def format_thought(thought: str) -> str:
    """A thought as the base sees it."""
    return f"{THOUGHT_PREFIX} {thought.strip()}"


def _with_one_shot(system: str, user: str, assistant: str, one_shot: bool) -> list[Message]:
    messages = [{"role": "system", "content": system}]
    if one_shot:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return messages


def base_messages(
    record: Record,
    answers: Sequence[str] = (),
    thoughts: Sequence[str] = (),
    one_shot: bool = False,
    style: AnswerStyle = "letter",
    history: Sequence[tuple[str, str]] = (),
) -> list[Message]:
    """The base's conversation, up to (not including) its next answer.

    Args:
        record: the question.
        answers: the base's earlier answers, oldest first.
        thoughts: the thoughts given so far, oldest first. With ``len(answers) == len(thoughts)``
            each thought follows the answer it reacts to (the loop); with one more thought than
            answers, the first thought comes straight after the question (the thought-first variant).
        one_shot: whether to add a one-shot example of the output format.
        style: the answer style the one-shot example shows.
        history: earlier exchanges of a chat session, ``(question, final answer)`` pairs, oldest
            first; they come before the question.

    Raises:
        ValueError: if the counts of answers and thoughts do not interleave.
    """
    if len(thoughts) not in (len(answers), len(answers) + 1):
        raise ValueError(f"{len(thoughts)} thoughts cannot interleave with {len(answers)} answers")
    shot_answer = format_answer(_ONE_SHOT, style=style)
    messages = _with_one_shot(BASE_SYSTEM, format_question(_ONE_SHOT, style), shot_answer, one_shot)
    for question, answer in history:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    messages.append({"role": "user", "content": format_question(record, style)})
    turns: list[Message] = []
    offset = len(thoughts) - len(answers)
    if offset:
        turns.append({"role": "user", "content": format_thought(thoughts[0])})
    for answer, thought in zip(answers, thoughts[offset:], strict=True):
        turns.append({"role": "assistant", "content": answer})
        turns.append({"role": "user", "content": format_thought(thought)})
    return messages + turns


def reasoning_messages(record: Record, one_shot: bool = False, style: AnswerStyle = "letter") -> list[Message]:
    """The teacher's and the TTM's prompt: the question (shown as the base sees it), to be reasoned about."""
    shot_question = format_question(_ONE_SHOT, style)
    shot = _with_one_shot(REASONING_SYSTEM, shot_question, _ONE_SHOT.reasoning or "", one_shot)
    return shot + [{"role": "user", "content": format_question(record, style)}]


def thought_messages(
    record: Record, exchanges: Sequence[tuple[str, str]] = (), one_shot: bool = False, style: AnswerStyle = "letter"
) -> list[Message]:
    """The TTM's conversation before its next thought.

    Args:
        record: the question.
        exchanges: the TTM's earlier thoughts, oldest first, each with the base's answer after it,
            as ``(thought, answer)`` pairs.
    """
    messages = reasoning_messages(record, one_shot, style)
    for thought, answer in exchanges:
        messages.append({"role": "assistant", "content": thought})
        messages.append({"role": "user", "content": f"{BASE_ANSWER_PREFIX} {answer}"})
    return messages


def qa_messages(passage: str, pairs: int) -> list[Message]:
    """The prompt asking a large model for ``pairs`` question-answer pairs grounded in ``passage``.

    The expected output is one pair per two lines, ``Q: ...`` then ``A: ...`` (what
    :func:`pseudocot.synth.qa.parse_pairs` reads; it also accepts numbered and JSON variants).
    """
    user = (
        f"Passage:\n{passage.strip()}\n\n"
        f"Write {pairs} different questions a user could ask that this passage answers, each with its answer "
        "taken from the passage. Write each pair as two lines:\nQ: <question>\nA: <answer>"
    )
    return [{"role": "system", "content": QA_SYSTEM}, {"role": "user", "content": user}]


def plain_document(record: Record, style: AnswerStyle, worked: bool) -> str:
    """A problem written as plain text, not a conversation (the tiny world's corpus has these too)."""
    solution = f"\nSolution: {record.reasoning}" if worked else ""
    answer = record.answer if style == "letter" else record.answer_text
    return f"Problem: {format_question(record, style)}{solution}\nAnswer: {answer}"


def answer_prompt(tokenizer: PreTrainedTokenizerBase, messages: list[Message]) -> str:
    """The conversation rendered up to the base's answer, ending in ``The answer is`` for scoring."""
    return render(tokenizer, messages) + ANSWER_PREFIX


def render(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[Message],
    completion: str | None = None,
    add_generation_prompt: bool = True,
) -> str:
    """Text of a conversation through the tokenizer's chat template.

    With ``completion``, the assistant turn is appended and closed, as in training data; without
    it, the text ends with the header of the assistant's next turn when ``add_generation_prompt``.
    """
    if completion is not None:
        messages = messages + [{"role": "assistant", "content": completion}]
        add_generation_prompt = False
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except TemplateError:  # the template's raise_exception: no system role, or roles must alternate
        folded = strictly_alternating(messages)
        return tokenizer.apply_chat_template(folded, tokenize=False, add_generation_prompt=add_generation_prompt)


def strictly_alternating(messages: list[Message]) -> list[Message]:
    """The conversation for templates without a system role that need user and assistant to alternate.

    The system instruction opens the first user turn (a turn of its own if the conversation starts
    with the assistant), and consecutive turns of one role become one turn, their contents a blank
    line apart: a thought straight after the question joins the question's turn.
    """
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    folded: list[Message] = []
    for message in messages:
        if message["role"] == "system":
            continue
        if folded and folded[-1]["role"] == message["role"]:
            folded[-1] = {"role": message["role"], "content": f"{folded[-1]['content']}\n\n{message['content']}"}
        else:
            folded.append({"role": message["role"], "content": message["content"]})
    if system and folded and folded[0]["role"] == "user":
        folded[0] = {"role": "user", "content": f"{system}\n\n{folded[0]['content']}"}
    elif system:
        folded.insert(0, {"role": "user", "content": system})
    return folded

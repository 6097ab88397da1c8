import pytest

from pseudocot import prompts
from pseudocot.data.records import Record

REC = Record(
    id="1", source="s", question="What is 1 + 1?", choices=["3", "2", "5", "7"], answer="B", reasoning="1 + 1 = 2."
)


def test_question_lists_lettered_options():
    assert prompts.format_question(REC) == "What is 1 + 1?\nA. 3\nB. 2\nC. 5\nD. 7"


def test_answer_styles():
    assert prompts.format_answer(REC) == "The answer is B."
    assert prompts.format_answer(REC, 2) == "The answer is C."
    assert prompts.format_answer(REC, style="cloze") == "The answer is 2."
    assert prompts.format_question(REC, "cloze") == "What is 1 + 1?"
    assert prompts.answer_options(REC, "letter") == [" A", " B", " C", " D"]
    assert prompts.answer_options(REC, "cloze") == [" 3", " 2", " 5", " 7"]
    free = Record(id="f", source="s", question="Who?", answer="Ada")
    assert prompts.format_answer(free) == "Ada"


def test_loop_and_thought_first_orders():
    loop = prompts.base_messages(REC, answers=["The answer is A."], thoughts=["t1"])
    assert [m["role"] for m in loop] == ["system", "user", "assistant", "user"]
    assert loop[-1]["content"] == "Thought: t1"
    first = prompts.base_messages(REC, answers=["The answer is A."], thoughts=["t0", "t1"])
    assert [m["content"] for m in first[2:]] == ["Thought: t0", "The answer is A.", "Thought: t1"]
    with pytest.raises(ValueError, match="cannot interleave"):
        prompts.base_messages(REC, answers=["a", "b"], thoughts=[])


def test_one_shot_adds_an_example_exchange():
    msgs = prompts.base_messages(REC, one_shot=True)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[2]["content"].startswith(prompts.ANSWER_PREFIX)
    assert [m["role"] for m in prompts.reasoning_messages(REC, one_shot=True)] == [
        "system",
        "user",
        "assistant",
        "user",
    ]


def test_render_uses_the_llama3_structure(tokenizer):
    text = prompts.render(tokenizer, prompts.base_messages(REC))
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n")
    assert text.endswith("D. 7<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    full = prompts.render(tokenizer, prompts.base_messages(REC), completion="The answer is B.")
    assert full == text + "The answer is B.<|eot_id|>"

import pytest

from pseudocot import prompts
from pseudocot.records import Record

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


# google/gemma-2-9b-it's chat template, and mistralai/Mistral-7B-Instruct-v0.1's: neither has a system role,
# and both need user and assistant to alternate.
GEMMA_2 = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"
)
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)


def test_strict_templates_get_the_system_in_the_first_user_turn_and_no_two_turns_of_a_role(tokenizer):
    import copy

    cot = prompts.base_messages(REC, thoughts=["1 + 1 = 2."], one_shot=True)  # a thought straight after the question
    assert [m["role"] for m in cot][-2:] == ["user", "user"]
    folded = prompts.strictly_alternating(cot)
    assert [m["role"] for m in folded] == ["user", "assistant", "user"]
    assert folded[0]["content"] == f"{prompts.BASE_SYSTEM}\n\nWhat is 2 + 3?\nA. 4\nB. 5\nC. 6\nD. 1"
    assert folded[2]["content"] == f"{prompts.format_question(REC)}\n\nThought: 1 + 1 = 2."
    strict = copy.deepcopy(tokenizer)
    for template in (GEMMA_2, MISTRAL):
        strict.chat_template = template
        with pytest.raises(Exception, match="System role not supported|roles must alternate"):
            strict.apply_chat_template(cot, tokenize=False)
        prompt = prompts.render(strict, cot)
        assert prompt == strict.apply_chat_template(folded, tokenize=False, add_generation_prompt=True)
        assert prompts.render(strict, cot, completion="The answer is B.").startswith(prompt)  # training data's check
    assert prompt.count("[INST]") == 2 and prompt.startswith(f"{strict.bos_token}[INST] {prompts.BASE_SYSTEM}\n\n")
    # A template with a system role renders the conversation as it is.
    assert prompts.render(tokenizer, cot) == tokenizer.apply_chat_template(
        cot, tokenize=False, add_generation_prompt=True
    )

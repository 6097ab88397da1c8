"""Batched generation: left padding changes nothing, counts are right, ignored settings are named."""

from pseudocot.config import GenerationPreset
from pseudocot.infer.generate import generate, generation_config, stop_token_ids


def test_batched_generation_equals_one_prompt_at_a_time(tokenizer, random_llama):
    model = random_llama
    prompts = ["Start with 3.", "Problem: Working modulo 10, start with 589, then add 1.", "x = 4"]
    preset = GenerationPreset(max_new_tokens=8)
    together = generate(model, tokenizer, prompts, preset, batch_size=3)
    alone = [generate(model, tokenizer, [p], preset) for p in prompts]
    assert together.texts == [a.texts[0] for a in alone]
    assert together.generated_tokens == [a.generated_tokens[0] for a in alone]
    assert together.prompt_tokens == [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    assert all(0 < n <= 8 for n in together.generated_tokens)
    # Truncated only where a row used all its new tokens without ending its turn.
    assert all(n == 8 for n, cut in zip(together.generated_tokens, together.truncated, strict=True) if cut)
    short = generate(model, tokenizer, prompts, GenerationPreset(max_new_tokens=1))
    assert short.generated_tokens == [1, 1, 1] and short.truncated == [True, True, True]


def test_settings_a_decoding_mode_ignores_are_named(tokenizer):
    config, ignored = generation_config(GenerationPreset(temperature=0.6, top_p=0.9), tokenizer)
    assert ignored == ["temperature", "top_p"] and not config.do_sample
    config, ignored = generation_config(GenerationPreset(do_sample=True, num_beams=2, temperature=0.6), tokenizer)
    assert ignored == [] and config.temperature == 0.6 and config.num_beams == 2
    assert tokenizer.convert_tokens_to_ids("<|eot_id|>") in stop_token_ids(tokenizer)


def test_readout_equals_a_forward_pass_over_prompt_and_answer(tokenizer, random_llama):
    import torch

    model = random_llama
    prompts = ["Start with 3.", "Problem: Working modulo 10, start with 589, then add 1.", "x = 4", "y"]
    for new_tokens in (6, 1):  # answers of several steps, and of one step (truncated or stopped at once)
        out = generate(
            model, tokenizer, prompts, GenerationPreset(max_new_tokens=new_tokens), batch_size=2, readout=lambda p, a: p
        )
        for k, prompt in enumerate(prompts):  # batches of 2, sorted by length: rows move between batches
            ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            answer = out.answer_ids[k]
            assert 1 <= len(answer) <= new_tokens
            with torch.inference_mode():
                full = model(input_ids=torch.tensor([ids + answer]), output_hidden_states=True)
            state, logp = out.readouts[k]
            expected = full.logits[0, len(ids) - 1 : len(ids) - 1 + len(answer)].float().log_softmax(-1)
            torch.testing.assert_close(logp, expected, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(state, full.hidden_states[-1][0, len(ids) - 1], atol=1e-4, rtol=1e-4)


def test_a_stopped_prompt_ends_after_one_token_and_the_others_are_unchanged(tokenizer, random_llama):
    prompts = ["Start with 3.", "Problem: Working modulo 10, start with 589, then add 1.", "x = 4"]
    preset = GenerationPreset(max_new_tokens=8)
    plain = generate(random_llama, tokenizer, prompts, preset)
    first = generate(random_llama, tokenizer, prompts, GenerationPreset(max_new_tokens=1))
    assert plain.generated_tokens[1] > 1  # it would have gone on
    for batch_size in (3, 2):  # stopped among running rows; alone in its batch, which then ends
        stopped = generate(random_llama, tokenizer, prompts, preset, batch_size, stopped=lambda i: i == 1)
        assert stopped.texts == [plain.texts[0], first.texts[1], plain.texts[2]]
        assert stopped.answer_ids[1][0] == first.answer_ids[1][0] and stopped.truncated[1]


def test_generation_stops_at_the_models_own_end_of_turn(tokenizer, random_llama):
    # Gemma's generation config lists <end_of_turn> beside its tokenizer's <eos>: a model's own stop ids count.
    model = random_llama
    preset = GenerationPreset(max_new_tokens=8)
    free = generate(model, tokenizer, ["Start with 3."], preset)
    assert free.truncated == [True] and len(set(free.answer_ids[0][:3])) == 3  # runs to the limit
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, free.answer_ids[0][2]]
    own = generate(model, tokenizer, ["Start with 3."], preset)
    assert own.answer_ids[0] == free.answer_ids[0][:2] and own.generated_tokens == [3] and own.truncated == [False]


def test_the_end_of_turn_tokens_of_chat_formats_stop_generation(tokenizer):
    import copy

    gemma = copy.deepcopy(tokenizer)
    gemma.add_special_tokens({"additional_special_tokens": ["<end_of_turn>", "<|im_end|>"]})
    stops = stop_token_ids(gemma)
    assert {gemma.convert_tokens_to_ids(t) for t in ("<end_of_turn>", "<|im_end|>", "<|eot_id|>")} <= set(stops)
    assert gemma.eos_token_id in stops

import torch

from pseudocot.infer.choice import fold_common_prefix, score_options
from pseudocot.infer.generate import pad_rows


def logprobs(model, tokenizer, prompts, continuations, batch_size=32):
    return score_options(model, tokenizer, prompts, continuations, batch_size).logprobs


def test_batched_scores_equal_one_at_a_time_and_brute_force(tokenizer, random_llama):
    model = random_llama
    prompts = ["The answer is", "Problem: 3 + 4 = 7. Answer: The answer is", "x"]
    conts = [" A", " B", " C", " D"]
    batched = logprobs(model, tokenizer, prompts, [conts] * 3, batch_size=2)
    single = torch.cat([logprobs(model, tokenizer, [p], [conts]) for p in prompts])
    assert batched.shape == (3, 4)
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)
    # Brute force: full forward of prompt + continuation, log-softmax at the last prompt position.
    ids = tokenizer(prompts[1], add_special_tokens=False)["input_ids"]
    cont = tokenizer(" C", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids + cont])).logits[0]
    expected = logits[len(ids) - 1].log_softmax(-1)[cont[0]]
    torch.testing.assert_close(batched[1, 2], expected, atol=1e-5, rtol=1e-5)


def test_multi_token_continuations_sum_token_logprobs(tokenizer, random_llama):
    model = random_llama
    conts = [" A", " multiply by 7"]
    assert len(tokenizer(conts[1], add_special_tokens=False)["input_ids"]) > 1
    scores = logprobs(model, tokenizer, ["Start with 3."], [conts])
    prompt = tokenizer("Start with 3.", add_special_tokens=False)["input_ids"]
    cont = tokenizer(conts[1], add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = model(torch.tensor([prompt + cont])).logits[0].log_softmax(-1)
    expected = sum(logp[len(prompt) - 1 + k, t] for k, t in enumerate(cont))
    torch.testing.assert_close(scores[0, 1], expected, atol=1e-4, rtol=1e-4)
    single = logprobs(model, tokenizer, ["Start with 3."], [[" A"]])
    torch.testing.assert_close(scores[0, 0], single[0, 0], atol=1e-5, rtol=1e-5)


def test_ragged_candidates_are_padded_with_minus_infinity(tokenizer, random_llama):
    scores = logprobs(random_llama, tokenizer, ["a", "b"], [[" 1", " 2", " 3"], [" 4"]])
    assert scores.shape == (2, 3)
    assert torch.isinf(scores[1, 1:]).all() and torch.isfinite(scores[0]).all()


def test_a_shared_leading_token_is_folded_without_changing_differences_or_confidence(tokenizer, random_llama):
    model = random_llama
    conts = [" 12", " 17", " 19"]
    assert len({tuple(tokenizer(c, add_special_tokens=False)["input_ids"][:2]) for c in conts}) == 1
    scores = score_options(model, tokenizer, ["Start with 3."], [conts], return_hidden=True)
    prompt = tokenizer("Start with 3.", add_special_tokens=False)["input_ids"]
    brute = []
    for c in conts:
        cont = tokenizer(c, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = model(torch.tensor([prompt + cont])).logits[0].log_softmax(-1)
        brute.append(sum(logp[len(prompt) - 1 + k, t] for k, t in enumerate(cont)))
    brute = torch.stack(brute)
    torch.testing.assert_close(scores.logprobs[0].softmax(-1), brute.softmax(-1), atol=1e-5, rtol=1e-5)
    assert scores.hidden.shape == (1, 32)
    assert scores.tokens == [len(prompt) + 2]  # the prompt and the shared " 1", in one forward pass


def test_rows_are_padded_on_the_side_asked_with_a_mask_of_the_real_ids():
    ids, mask = pad_rows([[5, 6, 7], [8]], 0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, mask = pad_rows([[5, 6, 7], [8]], -100, left=True)
    assert ids.tolist() == [[5, 6, 7], [-100, -100, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_hidden_states_of_a_ragged_batch_are_each_prompts_own(tokenizer, random_llama):
    prompts = ["The answer is", "Problem: 3 + 4 = 7. Answer: The answer is", "x"]
    scores = score_options(random_llama, tokenizer, prompts, [[" A", " B"]] * 3, return_hidden=True)
    for k, prompt in enumerate(prompts):
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            alone = random_llama(torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0, -1]
        torch.testing.assert_close(scores.hidden[k], alone, atol=1e-5, rtol=1e-5)


def test_options_of_unequal_length_are_compared_per_byte(tokenizer, random_llama):
    # The base's pick among options of different lengths is by log-probability per byte (acc_norm);
    # options of one length keep their summed log-probabilities, unchanged to the bit.
    from pseudocot import prompts
    from pseudocot.infer.answer_modes import scored
    from pseudocot.records import Record

    ragged = Record(
        id="r", source="t", question="Start with 3.", choices=["7", "multiply by 7", "add 1", "3"], answer="B"
    )
    even = Record(id="e", source="t", question="Start with 3.", choices=["7", "2", "5", "3"], answer="A")
    records = [ragged, even]
    conversations = [prompts.base_messages(r, style="cloze") for r in records]
    answers = scored(random_llama, tokenizer, conversations, records, "cloze")
    texts = [prompts.answer_prompt(tokenizer, m) for m in conversations]
    options = [prompts.answer_options(r, "cloze") for r in records]
    raw = score_options(random_llama, tokenizer, texts, options).logprobs  # summed over each option's tokens
    # Every option here starts with its own token, so its distinct part is the whole option.
    lengths = torch.tensor([float(len(o.encode())) for o in options[0]])
    per_byte = raw[0] / lengths * lengths.mean()
    torch.testing.assert_close(answers.confidence[0], per_byte.softmax(-1), atol=1e-5, rtol=1e-5)
    assert answers.choices[0] == int(per_byte.argmax())
    assert int(raw[0].argmax()) != int(per_byte.argmax())  # the normalization decides this row
    assert torch.equal(answers.confidence[1], raw[1].softmax(-1))  # to the bit


def test_multi_token_options_share_their_prompt_pass_across_ragged_batches(tokenizer, random_llama):
    # Prompts of different lengths (left-padded together), options of different lengths (right-padded
    # after the shared cache) and counts: each score is what its prompt and option give alone.
    prompts = ["Start with 3.", "Problem: 3 + 4 = 7. Answer: The answer is", "x"]
    conts = [[" multiply by 7", " A", " add 1"], [" multiply by 3 then add 5"], [" 12", " set it to 4"]]
    together = score_options(random_llama, tokenizer, prompts, conts, batch_size=4, return_hidden=True)
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    for i, (prompt, cands) in enumerate(zip(prompts, conts, strict=True)):
        # Brute force: the whole of prompt + option through the model, after the same folding of a
        # shared start (a lone option keeps only its last token to score).
        start, rest = fold_common_prefix(encode(prompt), [encode(c) for c in cands])
        for j, option in enumerate(rest):
            with torch.no_grad():
                logp = random_llama(torch.tensor([start + option])).logits[0].log_softmax(-1)
            brute = sum(logp[len(start) - 1 + k, t] for k, t in enumerate(option))
            torch.testing.assert_close(together.logprobs[i, j], brute, atol=1e-4, rtol=1e-4)
        assert torch.isinf(together.logprobs[i, len(cands) :]).all()
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        option_ids = sum(len(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in cands)
        assert together.tokens[i] <= len(prompt_ids) + option_ids  # the prompt counted once
    assert together.hidden.shape == (3, random_llama.config.hidden_size)


def test_cached_single_token_options_of_unequal_length_score_as_uncached(tokenizer, random_llama):
    # Through the key/value cache the options' logits arrive without their normalizer; compared per byte
    # they need it, so the cached and the uncached pick and confidence agree.
    from pseudocot import prompts
    from pseudocot.infer.answer_modes import scored
    from pseudocot.infer.prefix_cache import ConversationCache
    from pseudocot.models import pad_id
    from pseudocot.records import Record

    record = Record(
        id="r", source="t", question="Start with 3.", choices=["add", "multiply", "set", "result"], answer="B"
    )
    options = prompts.answer_options(record, "cloze")
    ids = [tokenizer(o, add_special_tokens=False)["input_ids"] for o in options]
    assert all(len(i) == 1 for i in ids) and len({len(o) for o in options}) > 1  # one token each, unequal
    conversations = [prompts.base_messages(record, style="cloze")]
    plain = scored(random_llama, tokenizer, conversations, [record], "cloze")
    cache = ConversationCache(random_llama, pad_id(tokenizer))
    cached = scored(random_llama, tokenizer, conversations, [record], "cloze", cache=cache, keys=[0])
    assert cached.choices == plain.choices
    torch.testing.assert_close(cached.confidence[0], plain.confidence[0], atol=1e-5, rtol=1e-4)

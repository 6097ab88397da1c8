import torch
from transformers import LlamaConfig, LlamaForCausalLM

from pseudocot.eval.choice import continuation_logprobs


def _model(tokenizer):
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(cfg).eval()


def test_batched_scores_equal_one_at_a_time_and_brute_force(tokenizer):
    model = _model(tokenizer)
    prompts = ["The answer is", "Problem: 3 + 4 = 7. Answer: The answer is", "x"]
    conts = [" A", " B", " C", " D"]
    batched = continuation_logprobs(model, tokenizer, prompts, [conts] * 3, batch_size=2)
    single = torch.cat([continuation_logprobs(model, tokenizer, [p], [conts]) for p in prompts])
    assert batched.shape == (3, 4)
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)
    # Brute force: full forward of prompt + continuation, log-softmax at the last prompt position.
    ids = tokenizer(prompts[1], add_special_tokens=False)["input_ids"]
    cont = tokenizer(" C", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids + cont])).logits[0]
    expected = logits[len(ids) - 1].log_softmax(-1)[cont[0]]
    torch.testing.assert_close(batched[1, 2], expected, atol=1e-5, rtol=1e-5)


def test_multi_token_continuations_sum_token_logprobs(tokenizer):
    model = _model(tokenizer)
    conts = [" A", " multiply by 7"]
    assert len(tokenizer(conts[1], add_special_tokens=False)["input_ids"]) > 1
    scores = continuation_logprobs(model, tokenizer, ["Start with 3."], [conts])
    prompt = tokenizer("Start with 3.", add_special_tokens=False)["input_ids"]
    cont = tokenizer(conts[1], add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = model(torch.tensor([prompt + cont])).logits[0].log_softmax(-1)
    expected = sum(logp[len(prompt) - 1 + k, t] for k, t in enumerate(cont))
    torch.testing.assert_close(scores[0, 1], expected, atol=1e-4, rtol=1e-4)
    single = continuation_logprobs(model, tokenizer, ["Start with 3."], [[" A"]])
    torch.testing.assert_close(scores[0, 0], single[0, 0], atol=1e-5, rtol=1e-5)


def test_ragged_candidates_are_padded_with_minus_infinity(tokenizer):
    scores = continuation_logprobs(_model(tokenizer), tokenizer, ["a", "b"], [[" 1", " 2", " 3"], [" 4"]])
    assert scores.shape == (2, 3)
    assert torch.isinf(scores[1, 1:]).all() and torch.isfinite(scores[0]).all()

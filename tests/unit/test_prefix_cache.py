"""The base's conversation cache gives what encoding every conversation from scratch gives."""

import torch

from pseudocot.infer.prefix_cache import ConversationCache


def _scratch(model, ids):
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_hidden_states=True)
    return out.logits[0, -1], out.hidden_states[-1][0, -1]


def test_extending_cached_conversations_in_a_ragged_batch_equals_encoding_from_scratch(tokenizer, random_llama):
    model = random_llama
    cache = ConversationCache(model, tokenizer.pad_token_id)
    enc = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    rounds = [
        ["Start with 3. The answer is", "Working modulo 10, start with 589. The answer is"],
        [
            "Start with 3. The answer is 7. Thought: 3 + 4 = 7. The answer is",
            "Working modulo 10, start with 589. The answer is 9. Thought: add 1. The answer is",
        ],
        [
            "Start with 3. The answer is 7. Thought: 3 + 4 = 7. The answer is 7. Thought: sure. The answer is",
            "A different conversation, not a continuation.",
        ],
    ]
    ran = []
    for texts in rounds:
        seqs = [enc(t) for t in texts]
        logits, hidden, tokens = cache.extend([0, 1], seqs)
        ran.append(tokens)
        for r, ids in enumerate(seqs):
            ref_logits, ref_hidden = _scratch(model, ids)
            torch.testing.assert_close(logits[r], ref_logits, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(hidden[r], ref_hidden, atol=1e-4, rtol=1e-4)
    # Round 2 ran only the new tokens; round 3 re-encoded the row that was not a continuation.
    assert ran[1][0] == len(enc(rounds[1][0])) - len(enc(rounds[0][0]))
    assert ran[2][1] == len(enc(rounds[2][1]))
    assert cache.reused_tokens > 0

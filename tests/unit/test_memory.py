"""At a real vocabulary (Llama 3's 128k tokens), inference computes logits only where it reads them.

Bytes are counted as aten allocates them: every new storage an op returns (views and in-place results
share their input's and are not counted), so the figures hold on any machine and need no GPU.
"""

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from transformers import LlamaConfig, LlamaForCausalLM

from pseudocot.infer.choice import score_options
from pseudocot.infer.prefix_cache import ConversationCache

VOCAB = 128_256  # Llama 3's
ROWS = 4


class Allocated(TorchDispatchMode):
    """Counts the bytes of the new storages the ops run under it return."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        seen = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in seen:
                seen.add(t.untyped_storage().data_ptr())
                self.bytes += t.untyped_storage().nbytes()
        return out


def allocated(fn) -> int:
    with torch.inference_mode(), Allocated() as counter:
        fn()
    return counter.bytes


def big_vocab_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).eval()


LAST_LOGITS = ROWS * VOCAB * 4  # float32 logits at one position per row


def test_each_round_of_the_cache_pass_allocates_at_most_twice_the_last_position_logits():
    model = big_vocab_llama()
    cache = ConversationCache(model, pad_id=0)
    gen = torch.Generator().manual_seed(0)
    first = [torch.randint(1, 1000, (n,), generator=gen).tolist() for n in (30, 24, 17, 9)]
    more = [
        ids + torch.randint(1, 1000, (n,), generator=gen).tolist() for ids, n in zip(first, (12, 5, 20, 8), strict=True)
    ]
    # The measurement sees logits: a plain forward pass over the first round allocates them at every position.
    assert allocated(lambda: model(torch.tensor([first[0]] * ROWS))) > 20 * LAST_LOGITS
    for sequences in (first, more):
        spent = allocated(lambda s=sequences: cache.extend(list(range(ROWS)), s))
        assert spent <= 2 * LAST_LOGITS, f"{spent / LAST_LOGITS:.2f}x the last-position logits"
    assert cache.reused_tokens == sum(len(ids) for ids in first)


def test_scoring_single_token_options_computes_logits_at_the_last_position_only(tokenizer):
    # The micro world's tokenizer, ids well inside the big vocabulary: only the logits' size matters here.
    model = big_vocab_llama()
    prompts = ["Start with 3. The answer is", "Working modulo 10, start with 589. Add 7. The answer is", "x", "y z"]
    spent = allocated(lambda: score_options(model, tokenizer, prompts, [[" A", " B", " C", " D"]] * ROWS, ROWS))
    assert spent <= 3 * LAST_LOGITS, f"{spent / LAST_LOGITS:.2f}x the last-position logits"  # logits, log-softmax

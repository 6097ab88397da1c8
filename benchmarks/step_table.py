"""Can a tiny Llama learn one reasoning step of the tiny world? The measurement behind its four operations.

    .venv/bin/python benchmarks/step_table.py [--ops four|all] [--steps 700] [--world runs/tiny/world]

Trains a fresh 1.1M-parameter ``LlamaForCausalLM`` (hidden 128, 4 layers, the tiny-8b shape) from
scratch on sequences of 12 isolated step facts (``7 * 3 = 1.``), batches of 32, Adam at 2e-3, with
the world's tokenizer, and prints every 100 steps how often it predicts a fact's result digit right
on fresh sequences (chance 10%). ``--ops four`` is the world's table (add 1 or 5, multiply by 3 or 7:
40 facts); ``--ops all`` is the first world's (add or subtract any digit, multiply by 3, 7 or 9:
230 facts, where one operand alone says nothing about the result).
"""

from __future__ import annotations

import argparse
import random
import time

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

FOUR = [("+", 1), ("+", 5), ("*", 3), ("*", 7)]


def fact(rng: random.Random, ops: str) -> str:
    if ops == "four":
        op, b = rng.choice(FOUR)
    else:
        op = rng.choice("+-*")
        b = rng.choice([3, 7, 9]) if op == "*" else rng.randrange(10)
    a = rng.randrange(10)
    c = (a + b) % 10 if op == "+" else (a - b) % 10 if op == "-" else (a * b) % 10
    return f"{a} {op} {b} = {c}."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", choices=["four", "all"], default="four")
    parser.add_argument("--steps", type=int, default=700)
    parser.add_argument("--world", default="runs/tiny/world")
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(f"{args.world}/tokenizer")
    torch.manual_seed(0)
    rng = random.Random(0)

    def batch(n: int):
        texts = [" ".join(fact(rng, args.ops) for _ in range(12)) for _ in range(n)]
        return tokenizer(texts, return_tensors="pt", padding=True)

    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=512,
        max_position_embeddings=512,
    )
    model = LlamaForCausalLM(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    started = time.perf_counter()
    for step in range(1, args.steps + 1):
        inputs = batch(32)
        labels = inputs.input_ids.masked_fill(inputs.attention_mask == 0, -100)
        loss = model(**inputs, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 100 == 0:
            with torch.no_grad():
                held_out = batch(64)
                predicted = model(**held_out).logits.argmax(-1)
            right = total = 0
            for row in range(held_out.input_ids.shape[0]):
                tokens = tokenizer.convert_ids_to_tokens(held_out.input_ids[row])
                for i in range(2, len(tokens)):
                    if tokens[i].isdigit() and tokens[i - 2] == "Ġ=":  # the result digit of a fact
                        total += 1
                        right += int(predicted[row, i - 1] == held_out.input_ids[row, i])
            print(
                f"step {step}: loss {loss.item():.3f}, result digit right {right / total:.1%} "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()

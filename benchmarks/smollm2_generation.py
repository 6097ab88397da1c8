"""Does the project's generation stop where SmolLM2 does? Tokens per answer against plain ``model.generate``.

The base's prompts (the thought protocol's, in SmolLM2's ChatML) for the first questions of the tiny world's
two subjects are continued greedily twice: batched and left-padded through :func:`pseudocot.infer.generate.generate`
with the project's stop tokens, and one at a time by ``model.generate`` with the checkpoint's own generation
config. Prints the tokens generated per answer by each, and how many answers are identical.

    make real   # (or the convert-gguf step alone) then:
    .venv/bin/python benchmarks/smollm2_generation.py runs/smol/models/smollm2 runs/smol/world/test.jsonl
"""

import sys
import time
from pathlib import Path

import torch

from pseudocot import prompts
from pseudocot.config import GenerationPreset
from pseudocot.infer.generate import generate
from pseudocot.models import load_model, load_tokenizer
from pseudocot.records import read_jsonl

MAX_NEW_TOKENS = 96
QUESTIONS = 8  # per subject


def main(model_dir: str, questions: str) -> None:
    model, tokenizer = load_model(model_dir).eval(), load_tokenizer(model_dir)
    records = list(read_jsonl(Path(questions)))
    records = [r for s in ("tiny_math", "tiny_cs") for r in [r for r in records if r.subject == s][:QUESTIONS]]
    texts = [prompts.render(tokenizer, prompts.base_messages(r)) for r in records]
    started = time.perf_counter()
    ours = generate(model, tokenizer, texts, GenerationPreset(max_new_tokens=MAX_NEW_TOKENS), batch_size=16)
    ours_s = time.perf_counter() - started
    plain_tokens, same = [], 0
    started = time.perf_counter()
    for k, text in enumerate(texts):
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(model.device)
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)[0, ids.shape[1] :].tolist()
        plain_tokens.append(len(out))  # generate stops after the checkpoint's eos, which it keeps
        same += tokenizer.decode(out, skip_special_tokens=True).strip() == ours.texts[k]
    plain_s = time.perf_counter() - started
    n = len(texts)
    print(f"{n} answers, greedy, at most {MAX_NEW_TOKENS} new tokens")
    print(f"pseudocot generate (batched): {sum(ours.generated_tokens) / n:.1f} tokens per answer, {ours_s:.1f} s")
    print(f"model.generate (one by one): {sum(plain_tokens) / n:.1f} tokens per answer, {plain_s:.1f} s")
    print(f"identical answers: {same} of {n}; cut at the limit: {sum(ours.truncated)}")


if __name__ == "__main__":
    main(*sys.argv[1:3])

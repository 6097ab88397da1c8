"""Zoo pretraining throughput against this machine's dense matmul rate, measured in one run.

    .venv/bin/python benchmarks/zoo_throughput.py [--config configs/tiny.yaml] [--steps 40] [--repeats 3]

For each zoo model of the config it pretrains ``--steps`` steps through the real code path
(``pseudocot.world.zoo.pretrain``: Hugging Face Trainer, packed corpus blocks), ``--repeats`` times,
and prints the median tokens/s and the model FLOP rate by the usual estimate
(6 x parameters x tokens, plus attention's 6 x layers x block x hidden per token). In the same run
it times fp32 square matmuls to give the hardware's dense rate, and prints training speed as a
fraction of it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaForCausalLM

from pseudocot.config import load_config
from pseudocot.world.build import build_world
from pseudocot.world.corpus import ROLES
from pseudocot.world.zoo import PackedBlocks, llama_config, pretrain, read_corpus


def matmul_gflops(n: int = 1024, repeats: int = 20) -> float:
    """Median fp32 rate of an n x n matmul, in GFLOP/s."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def flops_per_token(cfg, block_size: int) -> float:
    """Training FLOPs per token: 6 x (non-embedding params + output projection) + attention."""
    h, layers, kv = cfg.hidden_size, cfg.num_hidden_layers, cfg.num_key_value_heads
    head = h // cfg.num_attention_heads
    per_layer = 2 * h * h + 2 * h * kv * head + 3 * h * cfg.intermediate_size
    return 6 * (layers * per_layer + h * cfg.vocab_size) + 6 * layers * block_size * h


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cfg = load_config(args.config)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    peak = [matmul_gflops() for _ in range(3)]
    runs = ", ".join(f"{p:.0f}" for p in peak)
    print(f"dense fp32 matmul 1024^3: median {statistics.median(peak):.1f} GFLOP/s (runs: {runs})")

    with tempfile.TemporaryDirectory() as tmp:
        world = Path(tmp) / "world"
        world.mkdir()
        build_world(cfg.world.model_copy(update={"corpus_documents": 2000}), cfg.protocol, world)
        tokenizer = AutoTokenizer.from_pretrained(world / "tokenizer")
        corpora = {role: PackedBlocks(read_corpus(world, role), tokenizer, cfg.zoo.block_size) for role in ROLES}
        print(f"\n{'model':10} {'params':>9} {'tokens/s':>10} {'GFLOP/s':>8} {'of matmul':>9}")
        for name, model in cfg.zoo.models.items():
            m = model.model_copy(update={"max_steps": args.steps})
            zoo = cfg.zoo.model_copy(update={"warmup_steps": 0, "save_steps": 10**9})
            rates = []
            for r in range(args.repeats):
                out = Path(tmp) / f"{name}-{r}"
                out.mkdir()
                rates.append(pretrain(name, m, zoo, world, out, corpora[m.corpus])["tokens_per_second"])
            tps = statistics.median(rates)
            gflops = tps * flops_per_token(llama_config(model, tokenizer), cfg.zoo.block_size) / 1e9
            n_params = LlamaForCausalLM(llama_config(model, tokenizer)).num_parameters()
            print(f"{name:10} {n_params:9d} {tps:10.0f} {gflops:8.1f} {gflops / statistics.median(peak):9.0%}")
        # Matmul again after training, to show the machine's rate did not drift during the run.
        print(f"\ndense fp32 matmul after the runs: {matmul_gflops():.1f} GFLOP/s")


if __name__ == "__main__":
    main()

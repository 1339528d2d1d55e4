#!/usr/bin/env bash
# Serve a dialogtune LoRA adapter with vLLM on a GPU (see docs/vllm.md).
#
#   examples/vllm/serve.sh runs/smollm2-lora-cpu            # adapter runs/smollm2-lora-cpu/adapter
#   BASE=models/smollm2-135m-instruct NAME=dialogsum PORT=8000 examples/vllm/serve.sh runs/my-run
#
# BASE is the folder written by examples/vllm/export_base.py (the exact base weights the
# adapter was trained on). The adapter folder is PEFT's own (adapter_config.json +
# adapter_model.safetensors): vLLM reads it as is and ignores dialogtune's extra file.
set -euo pipefail

RUN_DIR=${1:?usage: serve.sh RUN_DIR (a dialogtune train run directory holding adapter/)}
BASE=${BASE:-models/smollm2-135m-instruct}
NAME=${NAME:-dialogsum}
PORT=${PORT:-8000}
# vLLM refuses adapters whose rank exceeds --max-lora-rank (default 16, a power of two):
# the smallest allowed value that fits the adapter's r.
MAX_RANK=$(python -c "import json,sys; r = json.load(open(sys.argv[1]))['r']; print(next(v for v in (16, 32, 64, 128, 256, 512) if v >= r))" "$RUN_DIR/adapter/adapter_config.json")

# --generation-config vllm: ignore the model folder's generation_config.json defaults, so that
#   a request's explicit greedy settings are the only ones (as in dialogtune).
# --served-model-name: the base answers to this name; the adapter to $NAME.
exec vllm serve "$BASE" \
    --served-model-name "$(basename "$BASE")" \
    --enable-lora \
    --lora-modules "$NAME=$RUN_DIR/adapter" \
    --max-lora-rank "$MAX_RANK" \
    --generation-config vllm \
    --dtype bfloat16 \
    --max-model-len 4096 \
    --port "$PORT"

#!/usr/bin/env bash
# ZeRO-3 check on a GPU machine: the IOVQA demo recipe with the GPU recipes' DeepSpeed config
# (examples/deepspeed/ds_z3_config.json) and bf16, under torchrun on every visible GPU, on the offline
# tiny model and demo ladder. Prints whether the adapter was saved (gathered from the shards), the loss per
# step, the ZeRO stage and partition count of the saved optimizer shards, and the eval metrics.
#
#   bash bench/zero3_gpu.sh                  # all visible GPUs (CUDA_VISIBLE_DEVICES picks them)
#   ZERO3_STEPS=20 bash bench/zero3_gpu.sh   # more steps (default 8)
#   ZERO3_ON_CPU=1 bash bench/zero3_gpu.sh   # the same run on 2 CPU processes (gloo, fp32), for a dry run
#
# Not run by the tests (tests/test_deepspeed.py runs the CPU variant). Writes work/zero3_gpu/.
set -euo pipefail
cd "$(dirname "$0")/.."

mkdir -p work
make -s install >work/zero3_install.log 2>&1 || { tail -20 work/zero3_install.log; exit 1; }
export PATH="$PWD/.venv/bin:$PATH" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# the same tiny model and demo data as `make demo` (data_info/dataset_info.json has the iovqa_demo_* entries)
test -f work/tiny-qwen2.5-vl/config.json || iovqa build-tiny-model work/tiny-qwen2.5-vl
test -f data_info/demo/test.csv || iovqa demo-data data_info/demo --media-root data_info

OUT=work/zero3_gpu
STEPS=${ZERO3_STEPS:-8}
if [ "${ZERO3_ON_CPU:-0}" = 1 ]; then
    # use_cpu must stay false even here: with it accelerate never starts DeepSpeed's process group
    export DS_ACCELERATOR=cpu CUDA_VISIBLE_DEVICES=
    NPROC=2 BF16=false
else
    NPROC=$(python -c "import torch; print(torch.cuda.device_count())")
    BF16=true
    if [ "$NPROC" -lt 1 ]; then
        echo "no GPU visible; ZERO3_ON_CPU=1 runs the CPU variant" >&2
        exit 2
    fi
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
fi
echo "ZeRO-3 on $NPROC process(es), bf16=$BF16, $STEPS steps -> $OUT"

rm -rf "$OUT"
mkdir -p "$OUT"
start=$(date +%s)
status=0
FORCE_TORCHRUN=1 NPROC_PER_NODE=$NPROC llamafactory-cli train examples/iovqa_demo_cpu.yaml \
    deepspeed=examples/deepspeed/ds_z3_config.json use_cpu=false bf16=$BF16 \
    output_dir=$OUT max_steps=$STEPS save_strategy=steps save_steps=$STEPS \
    eval_strategy=steps eval_steps=$STEPS logging_steps=1 >"$OUT.log" 2>&1 || status=$?
echo "llamafactory-cli exit status $status after $(( $(date +%s) - start )) s (log: $OUT.log)"
if [ "$status" -ne 0 ]; then
    tail -40 "$OUT.log"
    exit "$status"
fi

python - "$OUT" "$STEPS" <<'EOF'
import glob, json, os, sys

import torch
from safetensors import safe_open

out, steps = sys.argv[1], int(sys.argv[2])
adapter = os.path.join(out, "adapter_model.safetensors")
ok = os.path.isfile(adapter)
if ok:
    with safe_open(adapter, "pt") as handle:
        shapes = [handle.get_slice(k).get_shape() for k in handle.keys()]
    ok = bool(shapes) and all(0 not in s for s in shapes)  # an un-gathered ZeRO-3 shard saves as an empty tensor
    print(f"adapter saved: {ok} ({len(shapes)} tensors, {os.path.getsize(adapter)} bytes)")
else:
    print("adapter saved: False")
with open(os.path.join(out, "trainer_log.jsonl"), encoding="utf-8") as handle:
    losses = [json.loads(line)["loss"] for line in handle if '"loss"' in line]
print("loss per step:", " ".join(f"{loss:.4f}" for loss in losses))
for shard in sorted(glob.glob(os.path.join(out, f"checkpoint-{steps}", f"global_step{steps}", "*optim_states.pt"))):
    state = torch.load(shard, map_location="cpu", weights_only=False)["optimizer_state_dict"]
    print(f"{os.path.basename(shard)}: zero stage {int(state['zero_stage'])}, partitions {state['partition_count']}")
with open(os.path.join(out, "all_results.json"), encoding="utf-8") as handle:
    results = json.load(handle)
print("eval:", {k: round(v, 4) for k, v in results.items() if k.startswith("eval_") and isinstance(v, float)})
print("ZeRO-3 check:", "OK" if ok and len(losses) == steps else "FAILED")
sys.exit(0 if ok and len(losses) == steps else 1)
EOF

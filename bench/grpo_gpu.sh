#!/usr/bin/env bash
# GRPO on a GPU machine: the 7B answer-only recipe (examples/iovqa_grpo_7b.yaml: LoRA r128, ZeRO-3, bf16, 8 answers
# per prompt drawn from the exact distribution, beta 0.001) for a few steps under torchrun on every visible GPU.
# Prints the median optimizer step time (after warm-up steps; torch.cuda.synchronize around each step), the
# largest rank's peak GPU memory (torch.cuda.max_memory_allocated), and the run's logged rewards.
#
#   GRPO_MODEL=/path/to/Qwen2.5-VL-7B-Instruct bash bench/grpo_gpu.sh
#   GRPO_ADAPTER=saves/iovqa_7b_r128 GRPO_MODEL=... bash bench/grpo_gpu.sh   # continue an SFT adapter
#   GRPO_RECIPE=examples/iovqa_grpo_qwen3vl_8b.yaml GRPO_MODEL=... bash bench/grpo_gpu.sh
#   GRPO_STEPS=10 GRPO_WARMUP=2 GRPO_DATASET=taobaovd_gc_train ...   # more steps, your data (default: the demo
#                                                                     # training videos re-encoded at 720x1280)
#   GRPO_ON_CPU=1 bash bench/grpo_gpu.sh    # the plumbing on the offline tiny model, 1 CPU process, no DeepSpeed
#
# GRPO_ADAPTER defaults to none (GRPO from the base model): the recipe's SFT adapter exists only after its SFT run.
# Not run by the tests or `make bench` (CI has no GPU). Writes work/grpo_gpu/. Reuses the step timer and the
# 720x1280 demo clips of bench/labelled_logits_gpu.py.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# the demo videos the 720x1280 clips are made from (as `make demo`; data_info/dataset_info.json has their entries)
test -f data_info/demo/train.csv || iovqa demo-data data_info/demo --media-root data_info >/dev/null

python - <<'PY'
import json, os, statistics, sys

import yaml

sys.path.insert(0, "bench")
from labelled_logits_gpu import OUT as _OUT, demo_hd_dataset, launch  # noqa: E402

env = os.environ
cpu = env.get("GRPO_ON_CPU") == "1"
recipe_path = env.get("GRPO_RECIPE", "examples/iovqa_grpo_7b.yaml")
steps, warmup = int(env.get("GRPO_STEPS", "5")), int(env.get("GRPO_WARMUP", "1"))
out = os.path.join(os.path.dirname(_OUT), "grpo_gpu")
os.makedirs(out, exist_ok=True)
with open(recipe_path, encoding="utf-8") as handle:
    recipe = yaml.safe_load(handle)
if env.get("GRPO_DATASET"):
    recipe["dataset"] = env["GRPO_DATASET"]
else:
    dataset_dir, name = demo_hd_dataset(out, int(env.get("GRPO_CLIPS", "16")))
    recipe.update(dataset=name, dataset_dir=dataset_dir, media_dir=out)
recipe.update(max_steps=warmup + steps, output_dir=os.path.join(out, "run"), save_strategy="no", eval_strategy="no",
              logging_steps=1, plot_loss=False, overwrite_output_dir=True,
              iovqa_frame_cache_dir=os.path.join(out, "frame_cache"))
recipe.pop("eval_dataset", None)
recipe.pop("adapter_name_or_path", None)
if env.get("GRPO_ADAPTER"):
    recipe["adapter_name_or_path"] = env["GRPO_ADAPTER"]
if env.get("GRPO_MODEL"):
    recipe["model_name_or_path"] = env["GRPO_MODEL"]
if cpu:  # the plumbing only: tiny model, no DeepSpeed, fp32
    from iovqa_plugin.demo.tiny_model import build_tiny_model

    tiny = os.path.join("work", "tiny-qwen2.5-vl")
    if not os.path.isfile(os.path.join(tiny, "config.json")):
        build_tiny_model(tiny)
    recipe.pop("deepspeed", None)
    recipe.update(model_name_or_path=tiny, bf16=False, use_cpu=True, dataloader_num_workers=0,
                  preprocessing_num_workers=1, per_device_train_batch_size=recipe["iovqa_grpo_num_generations"],
                  gradient_accumulation_steps=1)
    nproc, run_env = 1, dict(env, CUDA_VISIBLE_DEVICES="", DS_ACCELERATOR="cpu")
else:
    import torch

    if not torch.cuda.is_available():
        sys.exit("no GPU visible; GRPO_ON_CPU=1 runs the plumbing on the tiny model")
    nproc, run_env = torch.cuda.device_count(), dict(env)
path = os.path.join(out, "recipe.yaml")
with open(path, "w", encoding="utf-8") as handle:
    yaml.safe_dump(recipe, handle)
result = launch(path, nproc, run_env)
seconds = result["step_seconds"][warmup:]
peak = result["max_memory_allocated"]
if cpu:
    device = "CPU (dry run)"
else:
    import torch

    device = f"{torch.cuda.get_device_name(0)} x {nproc}"
with open(os.path.join(out, "run", "trainer_state.json"), encoding="utf-8") as handle:
    logs = [e for e in json.load(handle)["log_history"] if "reward" in e]
print(f"{device}; {recipe_path} with model {recipe['model_name_or_path']}, adapter "
      f"{recipe.get('adapter_name_or_path', 'none')}, dataset {recipe['dataset']}; {len(seconds)} timed steps after "
      f"{warmup}; {recipe['per_device_train_batch_size']} answers x {recipe.get('gradient_accumulation_steps', 1)} "
      f"accumulation per device")
print("reward per step:", " ".join(f"{e['reward']:.3f}" for e in logs),
      "| parseable:", " ".join(f"{e['parseable']:.2f}" for e in logs))
print(f"grpo 7B answer-only: median step {statistics.median(seconds):.3f} s (min {min(seconds):.3f}, max "
      f"{max(seconds):.3f}), peak memory {peak / 2**30:.2f} GiB" if peak else
      f"grpo 7B answer-only: median step {statistics.median(seconds):.3f} s, peak memory n/a (no GPU)")
PY

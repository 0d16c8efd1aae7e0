"""The 7B recipe on a GPU: step time and peak GPU memory with labelled-position logits on and off.

    python bench/labelled_logits_gpu.py --model /path/to/Qwen2.5-VL-7B-Instruct        # every visible GPU
    python bench/labelled_logits_gpu.py --model M --dataset taobaovd_gc_train --steps 30 --nproc 8
    python bench/labelled_logits_gpu.py --cpu        # the plumbing on the tiny model, no GPU (a dry run)

Not run by the tests or by `make bench` (CI has no GPU). Each arm is the recipe (default
examples/iovqa_7b.yaml: LoRA r128, ZeRO-3, bf16, batch 1 x accumulation 2) as a GPU user runs it, launched by
torchrun on --nproc GPUs, with `iovqa_labelled_logits: true` and `false` and nothing else changed; arms alternate
over --repeats. By default the data are the demo training videos re-encoded at the challenge's 720x1280 (the
recipe's 512-visual-token frames, ~800-token samples, as with TaobaoVD-GC), so the script runs without the
challenge data; --dataset names an entry of the recipe's dataset_info.json instead.

Measured inside the training processes by a TrainerCallback: the seconds of each optimizer step after
--warmup steps (torch.cuda.synchronize around each), and `torch.cuda.max_memory_allocated` of each rank over the
whole run (the largest rank is reported). The last line compares the arms:
`labelled-position vs all-position logits (7B recipe): <ratio>x step time, peak memory <ratio>x`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
OUT = os.path.join(REPO, "work", "labelled_logits_gpu")


def worker(recipe_path: str, result_path: str) -> None:
    """One rank of a training run: the recipe through LLaMA-Factory's run_exp, with the step timer."""
    import torch
    from transformers import TrainerCallback

    import iovqa_plugin

    iovqa_plugin.apply()
    from llamafactory.train.tuner import run_exp

    cuda = torch.cuda.is_available()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.seconds: list[float] = []
            self.start = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.reset_peak_memory_stats()

        def on_step_begin(self, args, state, control, **kwargs):
            sync()
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            sync()
            self.seconds.append(time.perf_counter() - self.start)

        def on_train_end(self, args, state, control, **kwargs):
            rank = int(os.environ.get("RANK", "0"))
            peak = torch.cuda.max_memory_allocated() if cuda else None
            with open(f"{result_path}.rank{rank}", "w", encoding="utf-8") as handle:
                json.dump({"step_seconds": self.seconds, "max_memory_allocated": peak}, handle)

    with open(recipe_path, encoding="utf-8") as handle:
        run_exp(yaml.safe_load(handle), callbacks=[StepTimer()])


def demo_hd_dataset(work: str, clips: int) -> tuple[str, str]:
    """(dataset_dir, dataset name): the demo training videos at 720x1280 as an iovqa dataset."""
    from overhead import hd_clips  # bench/overhead.py: the same 720x1280 clips as the frame-cache row

    import pandas as pd

    rows = hd_clips(work, clips, seconds=5.0, fps=24)
    pd.DataFrame(rows, columns=["video_name", "Prompt", "Overall_MOS"]).to_csv(os.path.join(work, "hd.csv"),
                                                                               index=False)
    info = {"demo_hd": {"file_name": "hd.csv", "formatting": "iovqa",
                        "columns": {"videos": "video_name", "prompt": "Prompt", "response": "Overall_MOS"}}}
    with open(os.path.join(work, "dataset_info.json"), "w", encoding="utf-8") as handle:
        json.dump(info, handle)
    return work, "demo_hd"


def arm_recipe(args, data: tuple[str, str, str], labelled: bool) -> str:
    with open(args.recipe, encoding="utf-8") as handle:
        recipe = yaml.safe_load(handle)
    dataset_dir, dataset, media_dir = data
    name = "on" if labelled else "off"
    recipe.update(dataset=dataset, dataset_dir=dataset_dir, media_dir=media_dir, max_steps=args.warmup + args.steps,
                  iovqa_labelled_logits=labelled, output_dir=os.path.join(OUT, name), save_strategy="no",
                  eval_strategy="no", logging_steps=1, plot_loss=False, overwrite_output_dir=True,
                  iovqa_frame_cache_dir=os.path.join(OUT, "frame_cache"))
    recipe.pop("eval_dataset", None)
    if args.model:
        recipe["model_name_or_path"] = args.model
    if args.cpu:  # the plumbing only: tiny model, no DeepSpeed, fp32
        recipe.pop("deepspeed", None)
        recipe.update(bf16=False, use_cpu=True, dataloader_num_workers=0, preprocessing_num_workers=1)
    path = os.path.join(OUT, f"{name}.yaml")
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(recipe, handle)
    return path


def launch(recipe_path: str, nproc: int, env: dict) -> dict:
    result = recipe_path + ".result"
    for stale in (f"{result}.rank{rank}" for rank in range(nproc)):
        if os.path.exists(stale):
            os.remove(stale)
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_port=29571",
               os.path.abspath(__file__), "--worker", recipe_path, result]
    log = recipe_path + ".log"
    with open(log, "w", encoding="utf-8") as out:
        status = subprocess.run(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    if status != 0:
        raise SystemExit(f"{recipe_path} failed (exit {status}); the end of {log}:\n"
                         f"{open(log, encoding='utf-8').read()[-4000:]}")
    ranks = [json.load(open(f"{result}.rank{rank}", encoding="utf-8")) for rank in range(nproc)]
    return {"step_seconds": ranks[0]["step_seconds"],
            "max_memory_allocated": max((r["max_memory_allocated"] or 0) for r in ranks) or None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", nargs=2, metavar=("RECIPE", "RESULT"), help=argparse.SUPPRESS)
    parser.add_argument("--recipe", default=os.path.join(REPO, "examples", "iovqa_7b.yaml"))
    parser.add_argument("--model", help="local model folder (default: the recipe's model_name_or_path)")
    parser.add_argument("--dataset", help="a dataset of the recipe's dataset_info.json (default: the demo training "
                        "videos re-encoded at 720x1280)")
    parser.add_argument("--clips", type=int, default=16, help="how many 720x1280 demo clips")
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=1, help="runs per arm, alternating")
    parser.add_argument("--nproc", type=int, default=0, help="GPUs (default: every visible one)")
    parser.add_argument("--cpu", action="store_true", help="dry run on the tiny model (work/tiny-qwen2.5-vl), no GPU")
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return

    import torch

    if args.cpu:
        from iovqa_plugin.demo.tiny_model import build_tiny_model

        args.model = args.model or os.path.join(REPO, "work", "tiny-qwen2.5-vl")
        if not os.path.isfile(os.path.join(args.model, "config.json")):
            build_tiny_model(args.model)
        args.nproc = 1
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="", DS_ACCELERATOR="cpu")
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no GPU visible; --cpu runs the plumbing on the tiny model")
        args.nproc = args.nproc or torch.cuda.device_count()
        env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    if args.dataset:
        with open(args.recipe, encoding="utf-8") as handle:
            recipe = yaml.safe_load(handle)
        data = (recipe.get("dataset_dir", "data"), args.dataset, recipe.get("media_dir") or recipe.get("dataset_dir"))
    else:
        data = (*demo_hd_dataset(OUT, args.clips), OUT)
    paths = {labelled: arm_recipe(args, data, labelled) for labelled in (True, False)}
    runs: dict[bool, list[dict]] = {True: [], False: []}
    for _ in range(args.repeats):
        for labelled, path in paths.items():
            runs[labelled].append(launch(path, args.nproc, env))

    device = "CPU (dry run)" if args.cpu else f"{torch.cuda.get_device_name(0)} x {args.nproc}"
    print(f"{device}; {os.path.relpath(args.recipe, REPO)} with model {args.model or 'of the recipe'}, "
          f"dataset {args.dataset or f'{args.clips} demo clips at 720x1280'}; {args.steps} timed steps after "
          f"{args.warmup}, {args.repeats} run(s) per arm")
    step, memory = {}, {}
    for labelled, results in runs.items():
        seconds = [s for r in results for s in r["step_seconds"][args.warmup:]]
        step[labelled] = statistics.median(seconds)
        peaks = [r["max_memory_allocated"] for r in results if r["max_memory_allocated"]]
        memory[labelled] = max(peaks) if peaks else None
        shown = f"{memory[labelled] / 2**30:.2f} GiB" if memory[labelled] else "n/a (no GPU)"
        print(f"  iovqa_labelled_logits: {str(labelled).lower():5s}  median step {step[labelled]:.3f} s "
              f"(min {min(seconds):.3f}, max {max(seconds):.3f})  max_memory_allocated {shown}")
    ratio = f"{memory[True] / memory[False]:.2f}x" if memory[True] and memory[False] else "n/a"
    print(f"labelled-position vs all-position logits (7B recipe): {step[False] / step[True]:.2f}x step time, "
          f"peak memory {ratio}")


if __name__ == "__main__":
    main()

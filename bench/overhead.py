"""Training throughput and memory, side by side in one run: labelled-position logits vs all-position logits vs
stock LLaMA-Factory; cached frames vs mp4 decoding.

    python bench/overhead.py [--steps 30] [--repeats 3]

Needs the demo data (`make demo`: data_info/demo). Arms train the 256-wide benchmark model
(`build_tiny_model(hidden_size=256, head_std=0.1)`, LoRA, examples/iovqa_lora_cpu.yaml) on the same demo
training videos with the same seed and steps, each with the stock `llamafactory-cli train`,
interleaved over the repeats so that all arms see the same machine load:

* plugin:     `formatting: iovqa` with the digit mask and labelled-position logits (the default);
* plugin_all: the same with `iovqa_labelled_logits: false` (LLaMA-Factory's all-position logits);
* stock:      the same prompts, labels and frame lists as a plain alpaca dataset, no plugin key;
* mp4:        stock, but LLaMA-Factory decodes each mp4 itself every step (video_fps 1, 2 frames of the 2 s clips).

Throughput is the trainer's `train_samples_per_second` (model loading and data preparation excluded);
memory is the training process's peak resident set size (ru_maxrss of that child, from wait4).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def stock_datasets(work: str) -> None:
    """The demo train split as alpaca rows: frame lists (cached by the plugin) and mp4 paths."""
    from iovqa_plugin.data.annotations import Columns, load_annotations
    from iovqa_plugin.config import IOVQAArguments

    config = IOVQAArguments(frame_cache_dir=os.path.join(REPO, "work", "frame_cache"))
    samples, _, _ = load_annotations(os.path.join(REPO, "data_info", "demo", "train.csv"),
                                     Columns("video_name", "Prompt", "Overall_MOS"), config,
                                     os.path.join(REPO, "data_info"), progress=False)
    samples = samples[:30]  # the demo's base training videos
    frames = [{"instruction": s.prompt, "output": s.label, "videos": [s.frames]} for s in samples]
    videos = [{"instruction": s.prompt, "output": s.label, "videos": [s.video_path]} for s in samples]
    columns = {"prompt": "instruction", "response": "output", "videos": "videos"}
    info = {
        "stock_frames": {"file_name": "frames.json", "columns": columns},
        "stock_mp4": {"file_name": "mp4.json", "columns": columns},
        "iovqa_demo_train": {"file_name": "train30.csv", "formatting": "iovqa",
                             "columns": {"videos": "video_name", "prompt": "Prompt", "response": "Overall_MOS"}},
    }
    import pandas as pd

    pd.read_csv(os.path.join(REPO, "data_info", "demo", "train.csv")).head(len(samples)).to_csv(
        os.path.join(work, "train30.csv"), index=False)
    for name, rows in (("frames.json", frames), ("mp4.json", videos)):
        with open(os.path.join(work, name), "w", encoding="utf-8") as handle:
            json.dump(rows, handle)
    with open(os.path.join(work, "dataset_info.json"), "w", encoding="utf-8") as handle:
        json.dump(info, handle)


def bench_model() -> str:
    from iovqa_plugin.demo.tiny_model import build_tiny_model

    path = os.path.join(REPO, "work", "tiny-qwen2.5-vl-256")
    if not os.path.isfile(os.path.join(path, "config.json")):
        build_tiny_model(path, hidden_size=256, head_std=0.1)
    return path


def recipe(work: str, arm: str, steps: int, model: str) -> str:
    with open(os.path.join(REPO, "examples", "iovqa_lora_cpu.yaml"), encoding="utf-8") as handle:
        base = yaml.safe_load(handle)
    base = {k: v for k, v in base.items() if not k.startswith("iovqa_") and k != "eval_dataset"}
    base.update(model_name_or_path=model, dataset_dir=work,
                media_dir=os.path.join(REPO, "data_info"), max_steps=steps, save_strategy="no", eval_strategy="no",
                output_dir=os.path.join(work, "out_" + arm), logging_steps=1000, seed=42)
    if arm in ("plugin", "plugin_all"):
        base.update(dataset="iovqa_demo_train", iovqa_label_mask="digits", iovqa_labelled_logits=arm == "plugin",
                    iovqa_frame_cache_dir=os.path.join(REPO, "work", "frame_cache"))
    elif arm == "stock":
        base.update(dataset="stock_frames")
    else:
        base.update(dataset="stock_mp4", video_fps=1.0, video_maxlen=2)
    path = os.path.join(work, arm + ".yaml")
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(base, handle)
    return path


def run(path: str, env: dict) -> tuple[float, float]:
    """(train samples/s, peak RSS in MiB) of one training process."""
    log = path + ".log"
    with open(log, "w", encoding="utf-8") as out:
        process = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "llamafactory-cli"), "train", path],
                                   cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{path} failed:\n{open(log, encoding='utf-8').read()[-3000:]}")
    with open(os.path.join(yaml.safe_load(open(path))["output_dir"], "all_results.json"), encoding="utf-8") as handle:
        return float(json.load(handle)["train_samples_per_second"]), usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="iovqa_overhead_")
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    try:
        stock_datasets(work)
        model = bench_model()
        paths = {arm: recipe(work, arm, args.steps, model) for arm in ("plugin", "plugin_all", "stock", "mp4")}
        rates = {arm: [] for arm in paths}
        memory = {arm: [] for arm in paths}
        for _ in range(args.repeats):
            for arm, path in paths.items():
                rate, rss = run(path, env)
                rates[arm].append(rate)
                memory[arm].append(rss)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{platform.machine()}, {os.cpu_count()} cores; tiny Qwen2.5-VL 256 wide, LoRA, {args.steps} steps x batch 4, "
          f"{args.repeats} interleaved repeats (median train samples/s, median peak RSS)")
    median = {arm: statistics.median(values) for arm, values in rates.items()}
    rss = {arm: statistics.median(values) for arm, values in memory.items()}
    for arm, value in median.items():
        print(f"  {arm:10s} {value:8.3f} samples/s  {rss[arm]:7.0f} MiB   runs: {', '.join(f'{v:.3f}' for v in rates[arm])}")
    print(f"labelled-position logits vs stock: {median['plugin'] / median['stock']:.2f}x samples/s, "
          f"peak RSS {rss['plugin'] / rss['stock']:.2f}x")
    print(f"  labelled-position vs all-position logits (plugin): {median['plugin'] / median['plugin_all']:.2f}x samples/s")
    print(f"  plugin with all-position logits vs stock: {(median['stock'] / median['plugin_all'] - 1) * 100:+.1f}% "
          "time per sample")
    print(f"  cached frames vs mp4 decoding (stock): {median['stock'] / median['mp4']:.2f}x samples/s "
          "(224 px demo clips; not the challenge's 720x1280)")


if __name__ == "__main__":
    main()

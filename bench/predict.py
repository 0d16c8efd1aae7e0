"""The plugin's scorer vs LLaMA-Factory's own `do_predict` path, on the same split and trained model.

    python bench/predict.py [--recipe examples/iovqa_demo_cpu.yaml] [--split iovqa_demo_test] [--repeats 2]

Needs a trained model (`make demo`). Three commands, interleaved over the repeats:

* `llamafactory-cli train` with do_predict + predict_with_generate (greedy, max_new_tokens 4);
* `iovqa score --mode greedy`;
* `iovqa score --mode expected`.

Each is timed end to end (process start, model loading, data preparation, scoring); LLaMA-Factory's
own `predict_samples_per_second` (its generation loop only) is printed next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def predict_recipe(recipe: str, split: str, batch_size: int, out: str) -> str:
    """The training recipe turned into LLaMA-Factory's generation run over ``split``."""
    with open(recipe, encoding="utf-8") as handle:
        base = yaml.safe_load(handle)
    drop = ("do_train", "eval_dataset", "eval_strategy", "save_strategy", "num_train_epochs", "overwrite_output_dir")
    base = {k: v for k, v in base.items() if k not in drop}
    # a LoRA run saves an adapter; a full or freeze run saves the whole model in its output_dir
    if base.get("finetuning_type", "lora") == "lora":
        base["adapter_name_or_path"] = base["output_dir"]
    else:
        base["model_name_or_path"] = base["output_dir"]
    base.update(
        do_predict=True,
        predict_with_generate=True,
        eval_dataset=split,
        per_device_eval_batch_size=batch_size,
        max_new_tokens=4,
        do_sample=False,
        output_dir=os.path.join(out, "predict"),
    )
    path = os.path.join(out, "predict.yaml")
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(base, handle)
    return path


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    # `iovqa score` exits 1 when some answers hold no number (an untrained model's); the file is still complete
    if result.returncode not in (0, 1) or "Traceback" in result.stderr:
        raise SystemExit(f"{' '.join(command)} failed:\n{(result.stdout + result.stderr)[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", default="examples/iovqa_demo_cpu.yaml")
    parser.add_argument("--split", default="iovqa_demo_test")
    parser.add_argument("--batch-size", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    bin_dir = os.path.dirname(sys.executable)
    work = tempfile.mkdtemp(prefix="iovqa_predict_")
    recipe = predict_recipe(args.recipe, args.split, args.batch_size, work)
    # name: (command, the prediction file it writes, or None)
    commands = {"LLaMA-Factory do_predict": ([os.path.join(bin_dir, "llamafactory-cli"), "train", recipe], None)}
    for mode in ("greedy", "expected"):
        out = os.path.join(work, f"{mode}.csv")
        commands[f"iovqa score --mode {mode}"] = ([
            os.path.join(bin_dir, "iovqa"), "score", "--recipe", args.recipe, "--data", args.split, "--out", out,
            "--mode", mode, "--batch-size", str(args.batch_size),
        ], out)
    seconds = {name: [] for name in commands}
    for _ in range(args.repeats):
        for name, (command, out) in commands.items():
            if out and os.path.exists(out):
                os.remove(out)  # a finished CSV would be resumed, not re-scored
            seconds[name].append(timed(command))
    with open(os.path.join(work, "predict", "predict_results.json"), encoding="utf-8") as handle:
        loop_rate = json.load(handle)["predict_samples_per_second"]
    import pandas as pd

    greedy = pd.read_csv(os.path.join(work, "greedy.csv"))
    videos, unanswered = len(greedy), int(greedy["greedy_mos"].isna().sum())
    print(f"{os.cpu_count()} cores; {videos} videos of {args.split}, batch {args.batch_size}, "
          f"{args.repeats} interleaved repeats (median wall seconds, process start to finished file)")
    print("\n| command | wall s | videos/s (end to end) |")
    print("|---|---|---|")
    median = {name: statistics.median(values) for name, values in seconds.items()}
    for name, value in median.items():
        print(f"| {name} | {value:.1f} | {videos / value:.2f} |")
    print()
    stock = median["LLaMA-Factory do_predict"]
    for mode in ("greedy", "expected"):
        print(f"iovqa score --mode {mode} vs do_predict: {stock / median[f'iovqa score --mode {mode}']:.2f}x faster end to end")
    print(f"Greedy answers without a number: {unanswered} of {videos} (timed all the same: the model generated them).")
    print(f"LLaMA-Factory's own generation-loop rate (excludes loading and preprocessing): {loop_rate:.2f} videos/s")


if __name__ == "__main__":
    main()

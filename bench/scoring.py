"""Scoring speed and accuracy: `expected` vs `greedy` decoding, side by side on the same batches.

    python bench/scoring.py [--recipe examples/iovqa_demo_cpu.yaml] [--data data_info/demo/test.csv] [--repeats 5]

Needs a trained model (the recipe's output_dir; `make demo` makes the demo's). Both modes run
on the same collated batches, interleaved, so the machine load is shared; the time of each
mode excludes frame extraction and collation (identical for both). Prints videos/s, the ratio,
and, for each mode, SRCC/PLCC against the split's MOS and the ties it leaves: greedy decoding
stops at a complete score, so the two cost about the same forward passes, and what expected
decoding buys is a continuous score (fewer tied videos, usually a higher correlation).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", default="examples/iovqa_demo_cpu.yaml")
    parser.add_argument("--data", default="data_info/demo/test.csv")
    parser.add_argument("--media-dir", default="data_info")
    parser.add_argument("--batch-size", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import pandas as pd
    import torch

    from iovqa_plugin.data.grid import expected_mos
    from iovqa_plugin.data.label_formats import parse_score
    from iovqa_plugin.eval.metrics import compute_metrics
    from iovqa_plugin.score.scorer import Scorer
    from iovqa_plugin.score.settings import ScorerSettings

    torch.manual_seed(0)
    scorer = Scorer(ScorerSettings.from_recipe(args.recipe))
    table = pd.read_csv(args.data)
    features = [
        scorer.encode(p, scorer.cache.get(os.path.join(args.media_dir, v)))
        for v, p in zip(table["video_name"], table["Prompt"])
    ]
    batches = [scorer.batch(features[i : i + args.batch_size]) for i in range(0, len(features), args.batch_size)]
    scorer.distribution(batches[0]), scorer.greedy(batches[0])  # warm-up

    seconds = {"expected": [], "greedy": []}
    predictions = {"expected": [], "greedy": []}
    for repeat in range(args.repeats):
        for batch in batches:
            start = time.perf_counter()
            probabilities, _ = scorer.distribution(batch)
            seconds["expected"].append(time.perf_counter() - start)
            start = time.perf_counter()
            texts = scorer.greedy(batch)
            seconds["greedy"].append(time.perf_counter() - start)
            if repeat == 0:
                predictions["expected"] += expected_mos(probabilities)[0].tolist()
                predictions["greedy"] += [parse_score(t) for t in texts]

    videos = len(features)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{videos} videos, batch {args.batch_size}, {args.repeats} repeats")
    print(f"  scored: {scorer.settings.note}")
    rate = {}
    for mode in ("expected", "greedy"):
        per_pass = sum(seconds[mode]) / args.repeats
        rate[mode] = videos / per_pass
        print(f"  {mode:8s} {rate[mode]:8.2f} videos/s  (median batch {statistics.median(seconds[mode]) * 1000:.1f} ms)")
    print(f"  expected / greedy speed: {rate['expected'] / rate['greedy']:.2f}x")
    mos = table["Overall_MOS"].to_numpy(float)
    for mode, values in predictions.items():
        missing = sum(v is None for v in values)
        if missing:
            print(f"  {mode:8s} SRCC n/a: {missing} of {videos} answers hold no number")
            continue
        m = compute_metrics(values, mos)
        tied = sum(a == b for i, a in enumerate(values) for b in values[i + 1:])
        print(f"  {mode:8s} SRCC {m['srcc']:.3f}  PLCC {m['plcc']:.3f}  final {m['final']:.3f}  "
              f"distinct scores {len(set(values))} of {videos}, tied pairs {tied} of {videos * (videos - 1) // 2}")


if __name__ == "__main__":
    main()

"""Data-parallel scoring: `iovqa score` in 1 process vs `--nproc 2` on the same machine, side by side.

    python bench/score_parallel.py [--videos 40] [--repeats 2] [--batch-size 4] [--work work/bench_score_parallel]

Self-contained: builds the offline tiny Qwen2.5-VL (untrained, `--adapter ''`: the speed is that of a trained
one of the same size) and the demo ladder in --work, and scores --videos rows (the demo's mp4 clips under
distinct names, so each is decoded as a new video would be). Each run gets a fresh frame cache: frame
extraction is part of the job, as when scoring new videos once. Fair on CPU: the single process uses all usable
cores as torch threads; each of the 2 processes uses half (set by `--nproc`). The runs alternate over the
repeats, so the machine's load is shared; medians are printed.

Videos/s are given end to end (process start, model loading, scoring, merge) and for the scoring itself (from
the first process starting to score to the last one finishing, as `iovqa score` reports it).

On GPUs the same command runs one process per GPU:

    iovqa score --recipe R.yaml --data D --out preds.csv --nproc auto
    torchrun --nproc_per_node 8 $(which iovqa) score --recipe R.yaml --data D --out preds.csv
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
SUMMARY = re.compile(r": (\d+) scored, (\d+) failed, (\d+) already done \(([\d.]+)s, scoring ([\d.]+)s")


def prepare(work: str, videos: int) -> tuple[str, str]:
    """(recipe, annotation file) of ``videos`` rows over the demo clips, in ``work``."""
    import pandas as pd

    from iovqa_plugin.demo.ladder import make_demo_dataset
    from iovqa_plugin.demo.tiny_model import build_tiny_model

    model = os.path.join(work, "tiny-qwen2.5-vl")
    if not os.path.isfile(os.path.join(model, "config.json")):
        build_tiny_model(model)
    demo = os.path.join(work, "demo")
    if not os.path.isfile(os.path.join(demo, "test.csv")):
        make_demo_dataset(demo, media_root=work)
    clips = pd.concat([pd.read_csv(os.path.join(demo, f"{s}.csv")) for s in ("train", "val", "test")])
    clips = clips.reset_index(drop=True)
    names = os.path.join(work, "videos")
    os.makedirs(names, exist_ok=True)
    rows = []
    for i in range(videos):
        clip = clips.iloc[i % len(clips)]
        name = os.path.join(names, f"v{i:05d}.mp4")
        if not os.path.lexists(name):
            os.symlink(os.path.abspath(os.path.join(work, clip["video_name"])), name)
        rows.append({"video_name": os.path.relpath(name, work), "Prompt": clip["Prompt"]})
    annotations = os.path.join(work, f"videos_{videos}.csv")
    pd.DataFrame(rows).to_csv(annotations, index=False)

    with open(os.path.join(REPO, "examples", "iovqa_demo_cpu.yaml"), encoding="utf-8") as handle:
        recipe = yaml.safe_load(handle)
    recipe.update(model_name_or_path=os.path.abspath(model), dataset_dir=os.path.abspath(work),
                  output_dir=os.path.join(os.path.abspath(work), "none"))
    path = os.path.join(work, "recipe.yaml")
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(recipe, handle, sort_keys=False)
    return path, annotations


def run(recipe: str, annotations: str, work: str, nproc: int, batch_size: int, threads: int, tag: str) -> dict:
    """One `iovqa score` run with a fresh frame cache; its wall time and reported scoring time."""
    with open(recipe, encoding="utf-8") as handle:
        settings = yaml.safe_load(handle)
    cache = os.path.join(work, f"frames_{tag}")
    shutil.rmtree(cache, ignore_errors=True)
    settings["iovqa_frame_cache_dir"] = cache
    own = os.path.join(work, f"recipe_{tag}.yaml")
    with open(own, "w", encoding="utf-8") as handle:
        yaml.safe_dump(settings, handle, sort_keys=False)
    out = os.path.join(work, f"preds_{tag}.csv")
    command = [sys.executable, "-m", "iovqa_plugin.cli", "score", "--recipe", own, "--adapter", "", "--data",
               annotations, "--media-dir", work, "--out", out, "--restart", "--batch-size", str(batch_size)]
    if nproc > 1:
        command += ["--nproc", str(nproc)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), LLAMAFACTORY_VERBOSITY="WARN", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    match = SUMMARY.search(result.stdout)
    if match is None:  # exit status 1 with a summary only means some videos failed: reported below
        raise SystemExit(f"{' '.join(command)} failed:\n{(result.stdout + result.stderr)[-3000:]}")
    shutil.rmtree(cache, ignore_errors=True)
    return {"wall": wall, "score": float(match.group(5)), "scored": int(match.group(1)),
            "failed": int(match.group(2)), "out": out}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--work", default=os.path.join("work", "bench_score_parallel"))
    args = parser.parse_args()

    import pandas as pd
    import torch

    from iovqa_plugin.score.launch import cpu_threads

    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    recipe, annotations = prepare(work, args.videos)
    cores = cpu_threads(1)
    arms = {1: {"threads": cores, "runs": []}, 2: {"threads": cpu_threads(2), "runs": []}}
    for repeat in range(args.repeats):
        order = (1, 2) if repeat % 2 == 0 else (2, 1)
        for nproc in order:
            arms[nproc]["runs"].append(run(recipe, annotations, work, nproc, args.batch_size, arms[nproc]["threads"],
                                           f"{nproc}p"))

    one, two = pd.read_csv(arms[1]["runs"][-1]["out"]), pd.read_csv(arms[2]["runs"][-1]["out"])
    same_rows = one["video"].tolist() == two["video"].tolist()
    largest = float((one["pred_mos"] - two["pred_mos"]).abs().max())
    print(f"{len(os.sched_getaffinity(0))} usable cores, torch {torch.__version__}, tiny Qwen2.5-VL (untrained), "
          f"{args.videos} videos (fresh frame cache per run), batch {args.batch_size}, {args.repeats} alternating "
          f"repeats (medians)")
    print()
    print("| processes | torch threads each | end to end videos/s | scoring videos/s | runs (wall s / scoring s) |")
    print("|---|---|---|---|---|")
    rate = {}
    for nproc, arm in arms.items():
        wall = statistics.median(r["wall"] for r in arm["runs"])
        score = statistics.median(r["score"] for r in arm["runs"])
        rate[nproc] = (args.videos / wall, args.videos / score)
        runs = ", ".join(f"{r['wall']:.1f} / {r['score']:.1f}" for r in arm["runs"])
        print(f"| {nproc} | {arm['threads']} | {rate[nproc][0]:.2f} | {rate[nproc][1]:.2f} | {runs} |")
    print()
    print(f"2 processes / 1 process: {rate[2][0] / rate[1][0]:.2f}x end to end, "
          f"{rate[2][1] / rate[1][1]:.2f}x scoring")
    failed = sum(r["failed"] for arm in arms.values() for r in arm["runs"])
    print(f"Same rows in the same order: {same_rows}; largest |pred_mos| difference {largest:.1e}; "
          f"failed videos: {failed}")


if __name__ == "__main__":
    main()

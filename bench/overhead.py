"""Training throughput and memory, side by side in one run: labelled-position logits vs all-position logits vs
stock LLaMA-Factory; cached frames vs mp4 decoding at the challenge's 720x1280.

    python bench/overhead.py [--steps 30] [--repeats 3] [--hd-clips 12] [--hd-seconds 5] [--hd-fps 24]

Needs the demo data (`make demo`: data_info/demo). Arms train the 256-wide benchmark model
(`build_tiny_model(hidden_size=256, head_std=0.1)`, LoRA, examples/iovqa_lora_cpu.yaml) on the same demo
training videos with the same seed and steps, each with the stock `llamafactory-cli train`,
interleaved over the repeats so that all arms see the same machine load:

* plugin:     `formatting: iovqa` with the digit mask and labelled-position logits (the default);
* plugin_all: the same with `iovqa_labelled_logits: false` (LLaMA-Factory's all-position logits);
* stock:      the same prompts, labels and frame lists as a plain alpaca dataset, no plugin key;
* frames_hd:  stock on the first --hd-clips training videos re-encoded at 720x1280 (portrait, h264, --hd-seconds at
              --hd-fps, the challenge's frame size; the 224 px demo clips decode for free), given as the plugin's
              cached 2-frame lists;
* mp4_hd:     the same clips as mp4 paths: LLaMA-Factory decodes every clip in full at every step (video_fps and
              video_maxlen chosen so that it keeps 2 frames too).

Both HD arms resize to the recipe's video_max_pixels, so the model sees the same number of visual tokens; they
differ only in where the frames come from. Besides their training throughput, the script times LLaMA-Factory's
collation alone (`mm_plugin.get_mm_inputs` for one sample, the work the collator does at every step) for the
two inputs, interleaved clip by clip: that is the cost the cache removes, whatever the model's step costs.

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
import time

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def stock_datasets(work: str) -> None:
    """The demo train split as alpaca rows with frame lists (cached by the plugin), and the plugin's CSV."""
    from iovqa_plugin.data.annotations import Columns, load_annotations
    from iovqa_plugin.config import IOVQAArguments

    config = IOVQAArguments(frame_cache_dir=os.path.join(REPO, "work", "frame_cache"))
    samples, _, _ = load_annotations(os.path.join(REPO, "data_info", "demo", "train.csv"),
                                     Columns("video_name", "Prompt", "Overall_MOS"), config,
                                     os.path.join(REPO, "data_info"), progress=False)
    samples = samples[:30]  # the demo's base training videos
    frames = [{"instruction": s.prompt, "output": s.label, "videos": [s.frames]} for s in samples]
    columns = {"prompt": "instruction", "response": "output", "videos": "videos"}
    info = {
        "stock_frames": {"file_name": "frames.json", "columns": columns},
        "iovqa_demo_train": {"file_name": "train30.csv", "formatting": "iovqa",
                             "columns": {"videos": "video_name", "prompt": "Prompt", "response": "Overall_MOS"}},
    }
    import pandas as pd

    pd.read_csv(os.path.join(REPO, "data_info", "demo", "train.csv")).head(len(samples)).to_csv(
        os.path.join(work, "train30.csv"), index=False)
    with open(os.path.join(work, "frames.json"), "w", encoding="utf-8") as handle:
        json.dump(frames, handle)
    with open(os.path.join(work, "dataset_info.json"), "w", encoding="utf-8") as handle:
        json.dump(info, handle)


def hd_clips(work: str, count: int, seconds: float, fps: int) -> list[tuple[str, str, str]]:
    """The first ``count`` demo training videos re-encoded at 720x1280: (csv row path, prompt, MOS) each."""
    import av
    import pandas as pd
    from PIL import Image

    rows = pd.read_csv(os.path.join(REPO, "data_info", "demo", "train.csv")).head(count)
    os.makedirs(os.path.join(work, "hd"), exist_ok=True)
    clips = []
    for name, prompt, mos in rows[["video_name", "Prompt", "Overall_MOS"]].itertuples(index=False):
        with av.open(os.path.join(REPO, "data_info", name)) as source:
            stream = source.streams.video[0]
            rate = float(stream.average_rate)
            frames = [frame.to_image().resize((720, 1280), Image.BICUBIC) for frame in source.decode(stream)]
        path = os.path.join(work, "hd", os.path.basename(name))
        with av.open(path, "w") as out:
            stream = out.add_stream("h264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = 720, 1280, "yuv420p"
            for index in range(int(seconds * fps)):  # the source played at its own rate, looped
                image = frames[int(index * rate / fps) % len(frames)]
                for packet in stream.encode(av.VideoFrame.from_image(image)):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        clips.append((os.path.relpath(path, work), prompt, mos))
    return clips


def hd_datasets(work: str, clips: list[tuple[str, str, str]], seconds: float) -> dict[str, list]:
    """frames_hd / mp4_hd alpaca rows for the HD clips (frames from the plugin's cache); adds them to the info."""
    import pandas as pd
    from iovqa_plugin.config import IOVQAArguments
    from iovqa_plugin.data.annotations import Columns, load_annotations

    pd.DataFrame(clips, columns=["video_name", "Prompt", "Overall_MOS"]).to_csv(os.path.join(work, "hd.csv"),
                                                                                index=False)
    config = IOVQAArguments(frame_cache_dir=os.path.join(work, "hd_frame_cache"))
    samples, _, _ = load_annotations(os.path.join(work, "hd.csv"), Columns("video_name", "Prompt", "Overall_MOS"),
                                     config, work, progress=False)
    rows = {
        "frames_hd": [{"instruction": s.prompt, "output": s.label, "videos": [s.frames]} for s in samples],
        "mp4_hd": [{"instruction": s.prompt, "output": s.label, "videos": [s.video_path]} for s in samples],
    }
    info_path = os.path.join(work, "dataset_info.json")
    with open(info_path, encoding="utf-8") as handle:
        info = json.load(handle)
    for name, data in rows.items():
        with open(os.path.join(work, name + ".json"), "w", encoding="utf-8") as handle:
            json.dump(data, handle)
        info[name] = {"file_name": name + ".json", "columns": info["stock_frames"]["columns"]}
    with open(info_path, "w", encoding="utf-8") as handle:
        json.dump(info, handle)
    return rows


def hd_video_settings(seconds: float) -> dict:
    """LLaMA-Factory's video keys that keep 2 frames of a ``seconds`` long clip, as the cache does."""
    return {"video_fps": 2.0 / seconds, "video_maxlen": 2}


def collation_seconds(model: str, rows: dict[str, list], seconds: float, repeats: int) -> dict[str, list[float]]:
    """Seconds LLaMA-Factory's qwen2_vl collation (get_mm_inputs) takes per sample, per HD arm, interleaved."""
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments, ModelArguments
    from llamafactory.model import load_tokenizer

    with open(os.path.join(REPO, "examples", "iovqa_lora_cpu.yaml"), encoding="utf-8") as handle:
        pixels = {k: v for k, v in yaml.safe_load(handle).items() if k.startswith("video_") and "pixels" in k}
    modules = load_tokenizer(ModelArguments(model_name_or_path=model, **pixels, **hd_video_settings(seconds)))
    template = get_template_and_fix_tokenizer(modules["tokenizer"], DataArguments(template="qwen2_vl"))
    times = {arm: [] for arm in rows}
    for _ in range(repeats):
        for index in range(len(rows["mp4_hd"])):
            for arm, data in rows.items():
                videos = data[index]["videos"]
                start = time.perf_counter()
                template.mm_plugin.get_mm_inputs([], videos, [], [0], [1], [0], [[0]], modules["processor"])
                times[arm].append(time.perf_counter() - start)
    return times


def bench_model() -> str:
    from iovqa_plugin.demo.tiny_model import build_tiny_model

    path = os.path.join(REPO, "work", "tiny-qwen2.5-vl-256")
    if not os.path.isfile(os.path.join(path, "config.json")):
        build_tiny_model(path, hidden_size=256, head_std=0.1)
    return path


def recipe(work: str, arm: str, steps: int, model: str, seconds: float) -> str:
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
    elif arm == "frames_hd":
        base.update(dataset="frames_hd", media_dir=work)
    else:
        base.update(dataset="mp4_hd", media_dir=work, **hd_video_settings(seconds))
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
    parser.add_argument("--hd-clips", type=int, default=12, help="demo training videos re-encoded at 720x1280")
    parser.add_argument("--hd-seconds", type=float, default=5.0, help="length of each 720x1280 clip")
    parser.add_argument("--hd-fps", type=int, default=24, help="frame rate of each 720x1280 clip")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="iovqa_overhead_")
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    try:
        stock_datasets(work)
        hd_rows = hd_datasets(work, hd_clips(work, args.hd_clips, args.hd_seconds, args.hd_fps), args.hd_seconds)
        model = bench_model()
        collation = collation_seconds(model, hd_rows, args.hd_seconds, args.repeats)
        arms = ("plugin", "plugin_all", "stock", "frames_hd", "mp4_hd")
        paths = {arm: recipe(work, arm, args.steps, model, args.hd_seconds) for arm in arms}
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
    hd = f"{args.hd_clips} clips of 720x1280, {args.hd_seconds:g} s at {args.hd_fps} fps"
    collate = {arm: statistics.median(values) for arm, values in collation.items()}
    print(f"cached frames vs mp4 decoding at 720x1280: {collate['mp4_hd'] / collate['frames_hd']:.2f}x samples/s "
          f"in collation ({collate['frames_hd'] * 1000:.0f} vs {collate['mp4_hd'] * 1000:.0f} ms per sample, "
          f"median of {len(collation['mp4_hd'])}; {hd})")
    print(f"  cached frames vs mp4 decoding at 720x1280, whole training step (stock): "
          f"{median['frames_hd'] / median['mp4_hd']:.2f}x samples/s")


if __name__ == "__main__":
    main()

"""GRPO rollouts for answer-only runs: exact-distribution sampling vs `model.generate`, side by side.

    python bench/grpo_rollouts.py [--prompts 4] [--group 8] [--hidden 256] [--repeats 5]

Both produce the same thing, `group` sampled answers for each of `prompts` video prompts, on the same model
(a tiny Qwen2.5-VL built here, `--hidden` wide, untrained) and the same collated prompts (the demo ladder's
test videos, LLaMA-Factory's template, frames and collator, as training builds them):

* exact-distribution: what the GRPO trainer runs on a micro-batch of `prompts` x `group` rows: one row of
  each group taken (`select_rows`), the policy's next-token distributions at the answer's first digit from one
  prefill of each prompt, `group` answers drawn token by token (`sample_completions`), the second digit's
  distributions from one batched step after the first digits drawn (`rl.rollouts.answer_logits`, lazy);
* generate: each prompt repeated `group` times, `model.generate` with sampling (temperature 1), at most 3 new
  tokens (the two digits and the stop token: what an answer-only rollout needs; the untrained model never
  stops earlier, a trained one stops after those 3).

The teacher-forced log-prob pass that follows a rollout is the same for both and is timed apart. Interleaved
over the repeats; prints answers/s of each and the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import json

    import pandas as pd
    import torch
    import yaml

    from iovqa_plugin.data.grid import ScoreGrid
    from iovqa_plugin.demo.ladder import make_demo_dataset
    from iovqa_plugin.demo.tiny_model import build_tiny_model
    from iovqa_plugin.rl.rollouts import answer_logits, sample_completions, select_rows
    from iovqa_plugin.score.scorer import Scorer
    from iovqa_plugin.score.settings import ScorerSettings

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as work:
        model_dir = build_tiny_model(os.path.join(work, "tiny"), hidden_size=args.hidden)
        make_demo_dataset(os.path.join(work, "demo"), media_root=work, train_views=0, kinds=("mixed",))
        with open(os.path.join(work, "dataset_info.json"), "w", encoding="utf-8") as handle:
            json.dump({"demo_test": {"file_name": "demo/test.csv", "formatting": "iovqa",
                                     "columns": {"videos": "video_name", "prompt": "Prompt",
                                                 "response": "Overall_MOS"}}}, handle)
        with open(os.path.join(REPO, "examples", "iovqa_lora_cpu.yaml"), encoding="utf-8") as handle:
            recipe = yaml.safe_load(handle)
        recipe.update(model_name_or_path=model_dir, dataset_dir=work, dataset="demo_test", eval_dataset=None,
                      output_dir=os.path.join(work, "none"), iovqa_frame_cache_dir=os.path.join(work, "cache"))
        recipe = {k: v for k, v in recipe.items() if v is not None}
        with open(os.path.join(work, "r.yaml"), "w", encoding="utf-8") as handle:
            yaml.safe_dump(recipe, handle)
        scorer = Scorer(ScorerSettings.from_recipe(os.path.join(work, "r.yaml"), adapter=""))
        table = pd.read_csv(os.path.join(work, "demo", "test.csv")).head(args.prompts)
        features = [scorer.encode(p, scorer.cache.get(os.path.join(work, v)))
                    for v, p in zip(table["video_name"], table["Prompt"])]
        loaded = scorer.loaded
        model, tokenizer = loaded.model, loaded.tokenizer
        grid = ScoreGrid.from_tokenizer(tokenizer)
        repeated = loaded.batch([f for f in features for _ in range(args.group)])
        generator = torch.Generator().manual_seed(0)

        def exact():
            unique = select_rows(repeated, range(0, args.prompts * args.group, args.group))
            first, second = answer_logits(model, unique, grid, lazy=True)
            return sample_completions(first, second, args.group, grid, generator=generator)

        def generate():
            inputs = {k: v for k, v in repeated.items() if k not in ("position_ids", "rope_deltas")}
            inputs["mm_token_type_ids"] = loaded.mm_token_type_ids(repeated["input_ids"])
            with torch.inference_mode():
                out = model.generate(**inputs, do_sample=True, temperature=1.0, top_p=1.0, max_new_tokens=3,
                                     eos_token_id=loaded.stop_ids, pad_token_id=tokenizer.pad_token_id)
            return out[:, repeated["input_ids"].shape[1]:].tolist()

        exact(), generate()  # warm-up
        seconds = {"exact": [], "generate": []}
        for _ in range(args.repeats):
            for name, rollout in (("exact", exact), ("generate", generate)):
                start = time.perf_counter()
                produced = rollout()
                seconds[name].append(time.perf_counter() - start)
                assert len(produced) == args.prompts * args.group
        total = args.prompts * args.group
        rate = {name: total / statistics.median(values) for name, values in seconds.items()}
        print(f"threads {torch.get_num_threads()}, {args.prompts} prompts x {args.group} answers, hidden "
              f"{args.hidden}, {args.repeats} repeats (interleaved), prompt length {repeated['input_ids'].shape[1]}")
        for name in ("exact", "generate"):
            print(f"  {name:9s} {rate[name]:9.1f} answers/s  (median {statistics.median(seconds[name]) * 1000:.1f} ms "
                  f"per {total} answers)")
        print(f"grpo rollouts: exact-distribution vs generate: {rate['exact'] / rate['generate']:.1f}x answers/s")


if __name__ == "__main__":
    main()

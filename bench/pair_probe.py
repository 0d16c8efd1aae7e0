"""Why the comparison arm of bench/learning.py learns nothing: what the tiny model gets of a comparison sample.

    python bench/pair_probe.py [--work work/bench_learning] [--pairs 400] [--model DIR]

On pairs drawn from the ladder as the comparison arm draws them (train split: fit; test split: read), encoded
by the scorer exactly as training encodes them (the mm plugin, the comparison prompt, A's video first):

* inputs: each sample holds two blocks of video tokens, A's before B's, each of its video's size; A's block's
  pixels are A's video's (the first half of the pair's pixel values equals A encoded alone); the rope positions
  of B's block come after A's (none shared);
* the answer position's attention (eager attention, each layer): its mass on A's and on B's video tokens;
* what the hidden states carry: a ridge probe (fitted on the train pairs, ridge strength by leave-out on a
  fifth of them) reading the human preference from (a) the mean last-layer state over A's video tokens minus
  that over B's, (b) the last-layer state at the answer position; held-out pairwise accuracy of each. (a) is
  what the video tokens say about which video is better; (b) is what has reached the position that answers;
* order: the answer position's state for (A, B) against (B, A): the part that changes with the order (what a
  preference can be read from) against the part that does not, as a share of the state's norm.

``--model`` probes a trained model (a run's output_dir) instead of the untrained one.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def drawn(root: str, split: str, iovqa_args) -> list:
    from iovqa_plugin.data.annotations import Columns
    from iovqa_plugin.data.pair_samples import load_drawn_pairs

    columns = Columns(video="video_name", prompt="Prompt", mos="Overall_MOS")
    samples, _, _ = load_drawn_pairs(os.path.join(root, f"{split}.csv"), columns, iovqa_args, root, progress=False)
    return samples


def blocks(ids, pad: int) -> list[tuple[int, int]]:
    """(start, end) of each run of ``pad`` tokens in a row, in order."""
    runs, start = [], None
    for i, token in enumerate(ids + [None]):
        if token == pad and start is None:
            start = i
        elif token != pad and start is not None:
            runs.append((start, i))
            start = None
    return runs


def forward(loaded, features: list, attentions: bool = False):
    import torch

    batch = loaded.batch(features)
    with torch.no_grad():
        out = loaded.model(**batch, output_hidden_states=True, output_attentions=attentions)
    return batch, out


def ridge_accuracy(x_train, y_train, x_test, y_test) -> float:
    """Held-out pairwise accuracy of a ridge classifier (targets +-1), its strength chosen on a fifth of train."""
    import numpy as np

    mean, scale = x_train.mean(0), x_train.std(0) + 1e-8
    z, z_test = (x_train - mean) / scale, (x_test - mean) / scale
    cut = len(z) * 4 // 5

    def fit(rows, targets, alpha):
        return np.linalg.solve(rows.T @ rows + alpha * np.eye(rows.shape[1]), rows.T @ targets)

    alphas = np.logspace(-2, 5, 15)
    best = max(alphas, key=lambda a: np.mean(np.sign(z[cut:] @ fit(z[:cut], y_train[:cut], a)) == y_train[cut:]))
    return float(np.mean(np.sign(z_test @ fit(z, y_train, best)) == y_test))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", default=os.path.join(REPO, "work", "bench_learning"))
    parser.add_argument("--pairs", type=int, default=400, help="pairs of each split probed")
    parser.add_argument("--model", default=None, help="a trained model folder (default: the untrained one)")
    args = parser.parse_args()

    import numpy as np
    import torch
    from learning import DATASETS, bench_model, ladder, recipe

    from iovqa_plugin.score.scorer import Scorer
    from iovqa_plugin.score.comparisons import ComparisonScorer
    from iovqa_plugin.score.settings import ScorerSettings

    root, model = ladder(args.work), bench_model(args.work)
    path = recipe(args.work, model, root, "comparison", 0, 150, 1e-3)
    scorer = Scorer(ScorerSettings.from_recipe(path, model=args.model or model))
    comparisons, loaded = ComparisonScorer(scorer), scorer.loaded
    pad = loaded.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    print(f"model {args.model or model} ({'trained' if args.model else 'untrained'}); pairs of "
          f"{DATASETS['comparison'][0]} as the comparison arm draws them")

    # inputs: two blocks, A's first, A's pixels, rope positions in order
    sample = drawn(root, "test", scorer.iovqa_args)[0]
    feature = comparisons.encode(sample)
    runs = blocks(list(feature["input_ids"]), pad)
    batch = loaded.batch([feature])
    alone = loaded.batch([loaded.encode_media("x <video>", [], [sample.frames[0]], prefix=[])])
    grid = batch["video_grid_thw"]
    per_video = (grid.prod(dim=1) // 4).tolist()  # merge 2x2
    half = int(grid[0].prod())
    same_pixels = torch.equal(batch["pixel_values_videos"][:half], alone["pixel_values_videos"])
    positions, _ = loaded.model.model.get_rope_index(
        batch["input_ids"], batch.get("mm_token_type_ids", loaded.mm_token_type_ids(batch["input_ids"])),
        image_grid_thw=None, video_grid_thw=grid, second_per_grid_ts=batch.get("second_per_grid_ts"),
        attention_mask=batch["attention_mask"])
    row = batch["input_ids"][0].tolist()
    ids_runs = blocks(row, pad)
    pos = positions[:, 0]
    a_pos, b_pos = (set(map(tuple, pos[:, s:e].T.tolist())) for s, e in ids_runs)
    print(f"inputs: {len(runs)} blocks of video tokens, sizes {[e - s for s, e in runs]} (grid says {per_video}), "
          f"A's block first: {runs[0][0] < runs[1][0]}; A's pixels are A's video alone: {same_pixels}; "
          f"rope positions: A's temporal {pos[0, ids_runs[0][0]:ids_runs[0][1]].unique().tolist()}, "
          f"B's temporal {pos[0, ids_runs[1][0]:ids_runs[1][1]].unique().tolist()}, shared (t, h, w) positions "
          f"{len(a_pos & b_pos)}")

    # attention of the answer position, hidden states, order
    loaded.model.set_attn_implementation("eager")  # sdpa returns no attention weights
    splits = {}
    for split in ("train", "test"):
        pairs = drawn(root, split, scorer.iovqa_args)[: args.pairs]
        diff, answer, flipped, mass = [], [], [], []
        for start in range(0, len(pairs), 8):
            chunk = pairs[start: start + 8]
            features = [comparisons.encode(s) for s in chunk]
            batch, out = forward(loaded, features, attentions=split == "test")
            last = out.hidden_states[-1].float()
            for i, s in enumerate(chunk):
                (a0, a1), (b0, b1) = blocks(batch["input_ids"][i].tolist(), pad)
                diff.append((last[i, a0:a1].mean(0) - last[i, b0:b1].mean(0)).numpy())
                answer.append(last[i, -1].numpy())
                if out.attentions is not None:
                    mass.append([(float(layer[i, :, -1, a0:a1].sum(-1).mean()), float(layer[i, :, -1, b0:b1].sum(-1).mean()))
                                 for layer in out.attentions])
            if split == "test":
                swapped = [replace(s, frames=s.frames[::-1], media=s.media[::-1], paths=s.paths[::-1]) for s in chunk]
                _, back = forward(loaded, [comparisons.encode(s) for s in swapped])
                flipped += back.hidden_states[-1][:, -1].float().numpy().tolist()
        human = np.array([s.human for s in pairs], dtype=float)
        splits[split] = (np.stack(diff), np.stack(answer), human, np.array(flipped), mass)
    (d_train, h_train, y_train, _, _), (d_test, h_test, y_test, f_test, mass) = splits["train"], splits["test"]
    if mass:
        per_layer = np.mean(np.array(mass), axis=0)
        print("answer position's attention mass (mean over heads and pairs), per layer, on A's / B's video tokens: "
              + "; ".join(f"layer {k} {a:.3f} / {b:.3f}" for k, (a, b) in enumerate(per_layer)))
    else:
        print("answer position's attention: not returned by this attention implementation")
    print(f"ridge probe, held-out pairwise accuracy ({len(y_train)} train / {len(y_test)} test pairs, "
          f"{np.mean(y_test > 0):.2f} of test pairs answered A): "
          f"A's video tokens minus B's (mean last-layer state) {ridge_accuracy(d_train, y_train, d_test, y_test):.3f}; "
          f"the answer position's last-layer state {ridge_accuracy(h_train, y_train, h_test, y_test):.3f}")
    odd, even = (h_test - f_test) / 2, (h_test + f_test) / 2
    print(f"order: the answer position's state, part that changes when A and B swap {np.linalg.norm(odd, axis=1).mean():.4f}"
          f" vs part that does not {np.linalg.norm(even, axis=1).mean():.4f} (ratio "
          f"{np.linalg.norm(odd, axis=1).mean() / np.linalg.norm(even, axis=1).mean():.4f})")


if __name__ == "__main__":
    main()

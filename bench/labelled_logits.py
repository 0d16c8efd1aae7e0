"""One training step's forward + backward: all-position logits (stock loss) vs labelled-position logits.

    python bench/labelled_logits.py [--hidden 256] [--batch 4] [--length 300] [--repeats 3]

Both paths run side by side in one process on the same batch of the tiny Qwen2.5-VL
(`build_tiny_model(hidden_size=256, head_std=0.1)`, full fine-tuning, float32), interleaved over the
repeats; each row is text of about `length` tokens whose last two labels are a two-digit score (the
digit mask). Prints the median seconds per step, the speed-up, and the two losses (equal).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def make_batch(rows: int, length: int, vocab: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, 151643, (rows, length), generator=generator)
    labels = torch.full_like(input_ids, -100)
    attention = torch.ones_like(input_ids)
    for row in range(rows):
        end = length - 3 * row  # rows of different lengths: right padding, scores at different positions
        input_ids[row, end - 2 : end] = torch.randint(15, 25, (2,), generator=generator)  # digit tokens
        labels[row, end - 2 : end] = input_ids[row, end - 2 : end]
        attention[row, end:] = 0
        input_ids[row, end:] = 151643
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def step(model, inputs, labelled: bool) -> tuple[float, float]:
    from iovqa_plugin.train.labelled_logits import labelled_loss

    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    loss = labelled_loss(model, inputs)[0] if labelled else model(**inputs).loss
    loss.backward()
    return time.perf_counter() - start, loss.item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from transformers import Qwen2_5_VLForConditionalGeneration

    from iovqa_plugin.demo.tiny_model import build_tiny_model

    with tempfile.TemporaryDirectory() as work:
        path = build_tiny_model(os.path.join(work, "tiny"), hidden_size=args.hidden, head_std=0.1)
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, dtype=torch.float32)
    model.train()
    inputs = make_batch(args.batch, args.length, model.config.text_config.vocab_size)
    step(model, inputs, True)  # warm-up of both paths
    step(model, inputs, False)
    times = {False: [], True: []}
    losses = {}
    for _ in range(args.repeats):
        for labelled in (False, True):
            seconds, losses[labelled] = step(model, inputs, labelled)
            times[labelled].append(seconds)
    stock, fast = statistics.median(times[False]), statistics.median(times[True])
    print(f"threads {torch.get_num_threads()}, batch {args.batch} x {args.length} tokens, hidden {args.hidden}")
    print(f"all-position logits:      {stock:.3f} s/step  loss {losses[False]:.6f}  {times[False]}")
    print(f"labelled-position logits: {fast:.3f} s/step  loss {losses[True]:.6f}  {times[True]}")
    print(f"speed-up: {stock / fast:.1f}x")


if __name__ == "__main__":
    main()

"""Can the tiny model's language side learn to read the quality level written in its prompt within the bench's steps?

    python bench/prompt_probe.py [--attention-gain 10] [--frozen-embedding] [--steps 150] [--video-tokens 64]
        [--init config|sqrt] [--attention-lr-scale 1] [--lora-qk 0]

The control arm of bench/learning.py in miniature, without LLaMA-Factory and without frames, to find in a minute
what a 150-step control run takes many minutes to show: the tiny model (`build_tiny_model`, with the attention
input gain given; 1 = the configs' 0.02 scales) is trained as the CPU recipe trains it (its language layers and
output layer, and its input embedding unless --frozen-embedding; AdamW lr 1e-3, betas 0.9 / 0.98, 10 % warm-up,
cosine, batch 4) on the plugin's default prompt for the bench's training scenes with the control arm's sentence
"The quality of this video is <level word>." and the label of a pseudo-MOS drawn as the ladder draws it, with
--video-tokens random vectors where the video's tokens go (what the prompt's word must be found among). It then
reads 100 prompts of the held-out scenes. The ablation's variants: --init config keeps the configs' 0.02 scales
(--attention-gain then must be 1), --init sqrt draws the language layers at 1/sqrt(64) behind the attention
input gain given (1: the init alone); --attention-lr-scale multiplies the learning rate of q, k and v (what the
gain does through Adam, done by the optimiser instead); --lora-qk R adds LoRA adapters of rank R (alpha 2R, lr
x10 as LoRA recipes use) on q and k next to the fully trained layers. It: the line `prompt probe: ... SRCC <first digit's expectation vs MOS>`
(a model that reads the level: about 0.97, the rater noise's ceiling; one that learnt the label distribution: ~0).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    import numpy as np
    import torch
    from ladder import LEVEL_WORDS, TEST_SCENES, TRAIN_SCENES
    from scipy.stats import spearmanr
    from transformers import Qwen2_5_VLForConditionalGeneration

    from iovqa_plugin.data.prompt import DEFAULT_TEMPLATE
    from iovqa_plugin.demo.ladder import LEVEL_QUALITY, rater_mean
    from iovqa_plugin.demo.tiny_model import ATTENTION_GAIN, build_tiny_model, build_tokenizer, scale_language_layers

    parser = argparse.ArgumentParser()
    parser.add_argument("--attention-gain", type=float, default=ATTENTION_GAIN)
    parser.add_argument("--frozen-embedding", action="store_true")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--video-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", choices=["config", "sqrt"], default=None,
                        help="the language layers' init (default: the build's own: sqrt unless the gain is 1)")
    parser.add_argument("--attention-lr-scale", type=float, default=1.0)
    parser.add_argument("--lora-qk", type=int, default=0, help="rank of LoRA adapters on q and k (0: none)")
    args = parser.parse_args()
    init = args.init or ("config" if args.attention_gain == 1 else "sqrt")
    if init == "config" and args.attention_gain != 1:
        parser.error("--init config has no attention gain (give --attention-gain 1)")

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    tokenizer = build_tokenizer()
    with tempfile.TemporaryDirectory() as folder:
        build_tiny_model(folder, seed=args.seed, attention_gain=args.attention_gain)
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder)
    language = model.model.language_model
    if init == "sqrt" and args.attention_gain == 1:  # the 1/sqrt(width) init without the gain
        with torch.no_grad():
            scale_language_layers(language, language.config.hidden_size, 1.0)
    digits = [tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)]

    def sample(scenes):
        scene, level = scenes[rng.integers(len(scenes))], int(rng.integers(5))
        prompt = f"{scene.prompt} The quality of this video is {LEVEL_WORDS[level]}."
        question = DEFAULT_TEMPLATE.format(video="", prompt=prompt, answer_format="an integer from 10 to 50")
        text = (f"<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n"
                f"<|im_start|>assistant\n")
        return text, int(round(rater_mean(LEVEL_QUALITY[level], rng) * 10))

    for name, parameter in model.named_parameters():
        parameter.requires_grad = name.startswith("lm_head") or "language_model.layers" in name or (
            "embed_tokens" in name and not args.frozen_embedding)
    groups = [{"params": [p for n, p in model.named_parameters() if p.requires_grad and not qkv(n)]},
              {"params": [p for n, p in model.named_parameters() if p.requires_grad and qkv(n)],
               "lr": 1e-3 * args.attention_lr_scale}]
    if args.lora_qk:
        adapters = add_lora_qk(language, args.lora_qk)
        groups.append({"params": adapters, "lr": 1e-2})
    optimizer = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.98), eps=1e-8, weight_decay=1e-4)
    warmup = max(1, args.steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (
        1 + math.cos(math.pi * (s - warmup) / max(1, args.steps - warmup))))

    def log_probs(batch):
        """(batch, 2, vocab) log-probabilities at the two label positions (teacher-forced first digit)."""
        rows = []
        for text, label in batch:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [digits[label // 10]]
            embedded = language.embed_tokens(torch.tensor(ids))
            video = torch.randn(args.video_tokens, embedded.shape[1]) * 0.5
            rows.append(torch.cat([embedded[:15], video, embedded[15:]]))  # where <video> goes, after the system turn
        length = max(len(r) for r in rows)
        padded = torch.stack([torch.cat([torch.zeros(length - len(r), r.shape[1]), r]) for r in rows])
        mask = torch.tensor([[0] * (length - len(r)) + [1] * len(r) for r in rows])
        hidden = language(inputs_embeds=padded, attention_mask=mask).last_hidden_state
        return model.lm_head(hidden[:, -2:]).log_softmax(-1)

    def loss_of(batch):
        first = torch.tensor([digits[label // 10] for _, label in batch])
        second = torch.tensor([digits[label % 10] for _, label in batch])
        scores = log_probs(batch)
        return -(scores[:, 0].gather(1, first[:, None]).mean() + scores[:, 1].gather(1, second[:, None]).mean()) / 2

    start = time.time()
    for _ in range(args.steps):
        loss = loss_of([sample(TRAIN_SCENES) for _ in range(4)])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    test = [sample(TEST_SCENES) for _ in range(100)]
    with torch.no_grad():
        first = torch.cat([log_probs(test[i:i + 10])[:, 0, digits].exp() for i in range(0, len(test), 10)])
        losses = [loss_of(test[i:i + 10]).item() for i in range(0, len(test), 10)]
    tens = first[:, 1:6] / first[:, 1:6].sum(1, keepdim=True)
    expected = (tens * torch.arange(1, 6)).sum(1).tolist()
    srcc = spearmanr(expected, [label for _, label in test]).statistic
    print(f"prompt probe: init {init}, attention gain {args.attention_gain:g}, q/k/v lr x{args.attention_lr_scale:g}, "
          f"LoRA q/k rank {args.lora_qk}, embedding "
          f"{'frozen' if args.frozen_embedding else 'trained'}, {args.steps} steps, {args.video_tokens} video tokens, "
          f"seed {args.seed}: held-out loss per label token {np.mean(losses):.3f}, first-digit mass "
          f"{first[:, 1:6].sum(1).mean().item():.3f}, SRCC {srcc:.3f} ({time.time() - start:.0f} s)")


def qkv(name: str) -> bool:
    """A language layer's q, k or v projection."""
    return "language_model.layers" in name and any(f"self_attn.{p}_proj" in name for p in "qkv")


def add_lora_qk(language, rank: int) -> list:
    """LoRA adapters (A random, B zero, scale alpha / rank = 2) added to each language layer's q and k outputs; their
    parameters."""
    import torch

    adapters = []
    for layer in language.layers:
        for projection in (layer.self_attn.q_proj, layer.self_attn.k_proj):
            a = torch.nn.Parameter(torch.randn(rank, projection.in_features) / projection.in_features ** 0.5)
            b = torch.nn.Parameter(torch.zeros(projection.out_features, rank))
            projection.register_forward_hook(lambda module, inputs, output, a=a, b=b: output + 2.0 * (
                inputs[0] @ a.T @ b.T))
            adapters += [a, b]
    return adapters


if __name__ == "__main__":
    main()

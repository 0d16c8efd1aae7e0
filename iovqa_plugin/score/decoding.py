"""The decoders: from a loaded model and a batch of prompts to scores (torch only).

* ``greedy``: temperature-0 generation (the paper's decoding), stopped once
  the answer holds a complete score (two digits; d.d for decimal labels): the
  digit-only loss trains the score's tokens and nothing after them, so what a
  model writes after its score is untrained (a random tiny model goes on
  writing digits: "455555" instead of "45"). A think block the model writes
  (``<think>...</think>``) and any text in it is not the answer: the score is
  read after it (``answer_text``).
* ``sampled``: n answers of one video sampled at a temperature, seeded (the
  mean of their scores is VisualQuality-R1's way of scoring).
* ``distribution``: p(n) over the integer grid 10..50 from the model's
  next-token distributions (first digit, then the second digit after each
  possible first digit), in one prefill plus one batched step; also the
  probability mass the model put on valid integers.
* ``level_distribution``: level-word runs (Q-Align): the softmax over the
  five level tokens at the answer's level position (after the tokens every
  level answer shares, if any) and the probability mass on them.
* ``head_scores``: the softmax-regression head's grade probabilities.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from ..data.grid import ScoreGrid
from ..data.levels import LevelTokens
from ..data.label_formats import get_label_format
from ..rl.answers import ANSWER_TAGS
from ..train.head import HeadForward, expected_score, grade_probabilities
from .modes import MAX_NEW_TOKENS


THOUGHT_TAGS = ("<think>", "</think>")


def answer_text(text: str, thought_tags: tuple[str, str] = THOUGHT_TAGS) -> str:
    """The answer part of generated text: after the last closing think tag; nothing while a think block is open.
    An answer block after it (``<answer>37</answer>``, the form GRPO thinking runs are trained on) is read
    inside its tags (an unclosed one: what follows its opening tag)."""
    opening, closing = thought_tags
    if closing and closing in text:
        text = text.rsplit(closing, 1)[1]
    elif opening and opening in text:
        text = text.split(opening, 1)[0]  # an unfinished think block: its text is not an answer
    if ANSWER_TAGS[0] in text:
        text = text.split(ANSWER_TAGS[0], 1)[1].split(ANSWER_TAGS[1], 1)[0]
    return text.strip()


class ScoreComplete:
    """A ``StoppingCriteria``: a row is done once its answer (the tokens after ``start``) holds a complete score."""

    def __init__(self, tokenizer: Any, start: int, pattern: re.Pattern, thought_tags: tuple[str, str] = THOUGHT_TAGS):
        self.tokenizer, self.start, self.pattern, self.thought_tags = tokenizer, start, pattern, thought_tags

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.start :], skip_special_tokens=True)
        return torch.tensor([bool(self.pattern.search(answer_text(text, self.thought_tags))) for text in texts],
                            device=input_ids.device)




def reasoning_text(text: str, thought_tags: tuple[str, str] = THOUGHT_TAGS) -> str | None:
    """The reasoning of generated text: inside its think block (from the start when the template wrote the opening
    tag into the prompt), None when it has no closed block."""
    opening, closing = thought_tags
    if not closing or closing not in text:
        return None
    thought = text.split(closing, 1)[0]
    if opening and opening in thought:
        thought = thought.split(opening, 1)[1]
    return thought.strip()


def greedy(model: Any, batch: dict[str, Any], tokenizer: Any, stop_ids: list[int], mm_token_type_ids: torch.Tensor,
           label_format: str = "integer", max_new_tokens: int = MAX_NEW_TOKENS,
           thought_tags: tuple[str, str] = THOUGHT_TAGS) -> list[str]:
    """Temperature-0 answers, one string per row (special tokens dropped), each ending at its score."""
    return _generate(model, batch, tokenizer, stop_ids, mm_token_type_ids, label_format, max_new_tokens, thought_tags,
                     do_sample=False)


def sampled(model: Any, batch: dict[str, Any], tokenizer: Any, stop_ids: list[int], mm_token_type_ids: torch.Tensor,
            temperature: float, seed: int, label_format: str = "integer", max_new_tokens: int = MAX_NEW_TOKENS,
            thought_tags: tuple[str, str] = THOUGHT_TAGS) -> list[str]:
    """One answer per row sampled at ``temperature`` (no top-k/top-p cut), each ending at its score, drawn from
    torch's generator seeded with ``seed`` (the caller's random state is left as it was). The batch is one
    video's prompt repeated once per answer (``num_return_sequences`` cannot expand LLaMA-Factory's
    ``second_per_grid_ts`` list in transformers 5.6)."""
    device = batch["input_ids"].device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return _generate(model, batch, tokenizer, stop_ids, mm_token_type_ids, label_format, max_new_tokens,
                         thought_tags, do_sample=True, temperature=temperature, top_k=0, top_p=1.0)


def _generate(model, batch, tokenizer, stop_ids, mm_token_type_ids, label_format, max_new_tokens, thought_tags,
              **sampling) -> list[str]:
    from transformers import StoppingCriteriaList

    # generate computes positions itself and refuses inputs the forward only tolerates (Qwen3-VL's video_metadata,
    # which LLaMA-Factory's collator keeps for the frame timestamps already written into the prompt)
    inputs = {k: v for k, v in batch.items() if k not in ("position_ids", "rope_deltas", "video_metadata")}
    inputs["mm_token_type_ids"] = mm_token_type_ids
    complete = ScoreComplete(tokenizer, batch["input_ids"].shape[1], get_label_format(label_format).complete,
                             thought_tags)
    with torch.inference_mode():
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            eos_token_id=stop_ids,
            pad_token_id=tokenizer.pad_token_id,
            stopping_criteria=StoppingCriteriaList([complete]),
            **sampling,
        )
    new = out[:, batch["input_ids"].shape[1] :]
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in new]


def grid_logits(model: Any, batch: dict[str, Any], grid: ScoreGrid) -> tuple[torch.Tensor, Any]:
    """(next-token logits at the answer's first position (B, V), logits after each first digit 1..5 (B, 5, V),
    None for one-token grids): one prefill plus one batched step. No gradient context of its own: the
    caller's (``distribution`` runs it under inference mode)."""
    first, cache = prefill(model, batch, grid.steps == 2)
    if grid.steps == 1:
        return first, None
    size = first.shape[0]
    k = grid.first_ids.numel()
    rows = torch.arange(size, device=first.device).repeat_interleave(k)
    step = continuation_logits(model, batch, cache, rows, grid.first_ids.to(first.device).repeat(size))
    return first, step.view(size, k, -1)


def prefill(model: Any, batch: dict[str, Any], use_cache: bool = True) -> tuple[torch.Tensor, Any]:
    """(next-token logits at each row's end (B, V), the prompts' cache)."""
    # logits_to_keep=1: only the last position's logits (all positions would be a (B, L, vocab) tensor)
    out = model(**batch, use_cache=use_cache, logits_to_keep=1)
    return out.logits[:, -1], out.past_key_values


def continuation_logits(model: Any, batch: dict[str, Any], cache: Any, rows: torch.Tensor,
                        token_ids: torch.Tensor) -> torch.Tensor:
    """(M, V) next-token logits after prompt ``rows[m]`` (of ``batch``, whose :func:`prefill` gave ``cache``)
    followed by the token ``token_ids[m]``: one batched step. The cache is reordered in place (used up)."""
    # reorder_cache (not batch_repeat_interleave) covers every layer kind, the linear-attention states of
    # hybrid models such as Qwen3.5 included
    cache.reorder_cache(rows)
    logits, _, _, _ = one_token_step(model, token_ids.unsqueeze(1), batch["attention_mask"][rows],
                                     batch["position_ids"][..., -1:].index_select(-2, rows), cache)
    return logits


def one_token_step(model: Any, step_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                   cache: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any]:
    """One token (``step_ids``: (M, 1)) after each row of ``cache``, whose attention mask is ``mask`` and whose
    last position ids are ``positions[..., -1:]``: (next-token logits (M, V), the mask and the position ids of
    that token, the cache)."""
    mask = torch.cat([mask, torch.ones_like(step_ids, dtype=mask.dtype)], dim=1)
    # the next text position after each row's last token, on all three mrope axes
    step_positions = positions[..., -1:] + 1
    step = model(input_ids=step_ids, attention_mask=mask, position_ids=step_positions, past_key_values=cache,
                 use_cache=True, logits_to_keep=1)
    return step.logits[:, -1], mask, step_positions, step.past_key_values


def distribution(model: Any, batch: dict[str, Any], grid: ScoreGrid) -> tuple[torch.Tensor, torch.Tensor]:
    """(p(n) over 10..50, probability mass on valid integers): one prefill plus one batched step."""
    with torch.inference_mode():
        first, second = grid_logits(model, batch, grid)
    return grid.probabilities(first, second), grid.mass(first, second)


def level_answer_logits(model: Any, batch: dict[str, Any], levels: LevelTokens) -> torch.Tensor:
    """(B, V) next-token logits at the level answers' distinguishing position: one prefill, plus a one-token step
    for each token every level answer starts with, when there are any (no gradient context of its own)."""
    shared = levels.shared_prefix
    out = model(**batch, use_cache=bool(shared), logits_to_keep=1)
    logits = out.logits[:, -1]
    mask, positions, cache = batch["attention_mask"], batch["position_ids"], out.past_key_values
    # one token a step: a hybrid model's linear-attention layers (Qwen3.5) carry their state only through one-token
    # steps (transformers runs a longer step as a fresh prefill)
    for token in shared:
        step_ids = torch.full((logits.shape[0], 1), token, dtype=torch.long, device=logits.device)
        logits, mask, positions, cache = one_token_step(model, step_ids, mask, positions, cache)
    return logits


def level_distribution(model: Any, batch: dict[str, Any], levels: LevelTokens) -> tuple[torch.Tensor, torch.Tensor]:
    """(p over the five levels (B, 5), probability mass on the level tokens): see :func:`level_answer_logits`."""
    with torch.inference_mode():
        logits = level_answer_logits(model, batch, levels)
    return levels.probabilities(logits), levels.mass(logits)


def head_scores(model: Any, batch: dict[str, Any], head: HeadForward) -> tuple[torch.Tensor, torch.Tensor]:
    """(expected grade, grade probabilities (B, 5)) from the softmax-regression head."""
    with torch.inference_mode():
        probabilities = grade_probabilities(head(model, batch))
    return expected_score(probabilities), probabilities

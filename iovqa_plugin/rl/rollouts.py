"""Rollouts: from a training batch to sampled answers and their per-token log-probs.

A batch is LLaMA-Factory's SFT batch (right-padded prompt + answer, the labels masked to the answer's score
tokens), ``num_generations`` consecutive rows per prompt. Each row's *start* is where its answer begins.

*Exact-distribution rollouts* (answer-only mode): where the answers form a closed set (the 41 integers
10..50, the five level words, choice words), the policy's next-token distributions at the answer's positions
come from one prefill of each prompt plus one batched step (the scorer's expected decoding:
``score.decoding.prefill`` and ``continuation_logits``, stepped only after the first digits the group drew;
``level_answer_logits``), so the group's answers are drawn token by token from
them (:func:`sample_completions`: temperature and top-p per token, as ``generate`` samples) instead of calling
``generate`` once per answer. A drawn token off the answer set (a first token that is no first digit, a
second digit past 50, a word that is no level) ends that answer there: it is an unreadable answer, rewarded 0,
as a generated one would be, so the objective is generate's for the answer's tokens; only what a valid answer
writes after its score (the stop token) is not drawn. A joint answer (several dimensions' scores) is drawn
score by score, each after the answer so far (:class:`AnswersSoFar`: the prompts' prefill cache carried along the
answers, so a prompt runs once for every dimension); its wording between the scores is the
row's own (:func:`joint_wording`), written for the model as the scorer writes it, and is no action
(:func:`joint_drawn`: mask 0).

*Teacher-forced log-probs*: every sampled (or generated) completion is written after its row's prompt
(:func:`completion_batch`) and one forward, with the output layer at the completion's positions only
(``train.labelled_logits.forward_at``), gives log π(o_t | prompt, o_<t) per completion token
(:func:`completion_logps`): the ratio, the KL and the gradient are taken on those, as TRL takes them on
generated tokens.

Torch only (no LLaMA-Factory): the adapter hands in the model and the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from ..data.grid import ScoreGrid
from ..data.levels import LevelTokens
from ..train.labelled_logits import forward_at
from ..data.labels import IGNORE_INDEX

# keys of an SFT batch laid out along the sequence (the rest, pixels and grids, are per sample and kept)
SEQUENCE_KEYS = ("input_ids", "attention_mask", "labels", "position_ids", "token_type_ids", "mm_token_type_ids")


def answer_starts(labels: torch.Tensor, lead: int = 0) -> torch.Tensor:
    """(B,) each row's first labelled position (the score's first token) minus ``lead`` tokens before it."""
    labelled = labels != IGNORE_INDEX
    if not bool(labelled.any(dim=1).all()):
        raise ValueError("a batch row has no labelled token: its answer cannot be located")
    return labelled.float().argmax(dim=1) - lead


def prompt_batch(batch: dict[str, Any], starts: torch.Tensor, pad_id: int) -> dict[str, Any]:
    """The rows' prompts (tokens before ``starts``) left-padded, so that every row's next token is its answer's:
    the layout the scorer's decoders and ``generate`` take. Per-sample tensors (pixels, grids) are kept."""
    out = {k: v for k, v in batch.items() if k not in SEQUENCE_KEYS and k not in ("rope_deltas",)}
    width = int(starts.max())
    rows = range(batch["input_ids"].shape[0])
    for key in ("input_ids", "attention_mask", "position_ids", "mm_token_type_ids", "token_type_ids"):
        value = batch.get(key)
        if value is None:
            continue
        fill = pad_id if key == "input_ids" else 1 if key == "position_ids" else 0
        shape = (*value.shape[:-1], width)
        left = value.new_full(shape, fill)
        for i in rows:
            s = int(starts[i])
            left[..., i, width - s:] = value[..., i, :s]
        out[key] = left
    return out


# per-sample visual inputs: grid key -> the pixel tensor whose rows it counts (Qwen2-VL family layout)
PIXELS_OF_GRID = {"video_grid_thw": "pixel_values_videos", "image_grid_thw": "pixel_values"}


def select_rows(batch: dict[str, Any], rows: Sequence[int]) -> Optional[dict[str, Any]]:
    """The batch's ``rows`` (their tokens and their visual inputs), or None when its visual inputs are not one
    video or image per row of the Qwen2-VL layout (flattened patches counted by a ``*_grid_thw``)."""
    size = batch["input_ids"].shape[0]
    index = torch.tensor(list(rows), device=batch["input_ids"].device)
    out = {}
    for key, value in batch.items():
        if key in SEQUENCE_KEYS or key == "rope_deltas":
            out[key] = value.index_select(value.dim() - 2 if key == "position_ids" and value.dim() == 3 else 0,
                                          index) if value is not None else None
        elif key in PIXELS_OF_GRID:
            if value is None:
                out[key] = None
                continue
            if value.shape[0] != size:
                return None
            pixels = batch[PIXELS_OF_GRID[key]]
            counts = value.prod(dim=-1).tolist()
            offsets = [0]
            for count in counts:
                offsets.append(offsets[-1] + int(count))
            out[key] = value.index_select(0, index)
            out[PIXELS_OF_GRID[key]] = torch.cat([pixels[offsets[r]:offsets[r + 1]] for r in rows])
        elif key in PIXELS_OF_GRID.values():
            continue
        elif isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == size:
            out[key] = value.index_select(0, index)
        elif isinstance(value, (list, tuple)) and len(value) == size:  # one per row (second_per_grid_ts)
            out[key] = type(value)(value[r] for r in rows)
        elif value is None:
            out[key] = None
        else:
            return None  # an input this function does not know how to split by row
    return out


def frame_orders(frames: Sequence[int], generator: Optional[torch.Generator] = None) -> list[list[int]]:
    """A random order of each video's ``frames`` frames other than the original one (T-GRPO's shuffled frames)."""
    orders = []
    for count in frames:
        order = list(range(count))
        while count > 1 and order == list(range(count)):
            order = torch.randperm(count, generator=generator).tolist()
        orders.append(order)
    return orders


def shuffle_frames(pixels: torch.Tensor, grid_thw: torch.Tensor, temporal_patch: int, patch: int,
                   orders: Sequence[Sequence[int]]) -> torch.Tensor:
    """The flattened video patches of the Qwen2-VL processor layout with each video's frames put in ``orders[v]``.

    Each video's rows are its (t, h, w) patches, t-major, each row (channels, temporal_patch, patch, patch): the
    t·temporal_patch frames are taken apart, reordered and put back, exactly as the processor would lay out
    the reordered frames (a temporal patch fuses two frames, so reordering whole patches would not do).
    """
    out, offset = [], 0
    for (t, h, w), order in zip(grid_thw.tolist(), orders):
        rows = pixels[offset: offset + t * h * w]
        offset += t * h * w
        channels = rows.shape[-1] // (temporal_patch * patch * patch)
        x = rows.reshape(t, h * w, channels, temporal_patch, patch * patch).permute(0, 3, 1, 2, 4)
        x = x.reshape(t * temporal_patch, h * w, channels, patch * patch)[torch.tensor(order, device=rows.device)]
        x = x.reshape(t, temporal_patch, h * w, channels, patch * patch).permute(0, 2, 3, 1, 4)
        out.append(x.reshape(t * h * w, -1))
    return torch.cat(out) if out else pixels


def answer_logits(model: Any, prompts: dict[str, Any], grid: Optional[ScoreGrid] = None,
                  levels: Optional[LevelTokens] = None, lazy: bool = False) -> tuple[torch.Tensor, Any]:
    """(first (B, V), second): the next-token logits of the prompts' answers, no gradient. Integers: at the first
    digit, and ``second`` (B, 5, V) after each first digit 1..5, or with ``lazy`` a function
    ``second(rows, digits) -> (M, V)`` that steps only the continuations asked for (those the drawn answers
    take: :func:`sample_completions`), in one batched step; levels: at the distinguishing position, second
    None."""
    from ..score.decoding import continuation_logits, grid_logits, level_answer_logits, prefill

    with torch.no_grad():
        if grid is not None and lazy and grid.steps == 2:
            first, cache = prefill(model, prompts)

            def second(rows: torch.Tensor, digits: torch.Tensor) -> torch.Tensor:
                with torch.no_grad():
                    ids = grid.first_ids.to(first.device)[digits.to(first.device)]
                    return continuation_logits(model, prompts, cache, rows.to(first.device), ids)

            return first, second
        if grid is not None:
            return grid_logits(model, prompts, grid)
        if levels is not None:
            return level_answer_logits(model, prompts, levels), None
    raise ValueError("answer_logits needs the score grid or the level tokens")


class AnswersSoFar:
    """The prompts' cache carried along answers written token by token (a joint answer's scores and the wording
    between them), so that a prompt, its vision tower included, is run once for every dimension of its answer.

    Its entries are answers so far: at first the prompts (``score.decoding.prefill``, no gradient);
    :meth:`extend` makes entry m continue entry ``parents[m]`` by ``tokens[m]``, one one-token step per token
    (hybrid models such as Qwen3.5 take the previous state of their linear-attention layers only in one-token
    steps, and a pad would move that state), and :meth:`second` gives the logits one first digit further from a
    copy of the cache, as :func:`answer_logits` with ``lazy``. ``logits``: (entries, V) the next-token logits
    after each entry."""

    def __init__(self, model: Any, prompts: dict[str, Any], grid: ScoreGrid):
        from ..score.decoding import prefill

        self.model, self.grid = model, grid
        with torch.no_grad():
            self.logits, self.cache = prefill(model, prompts)
        self.mask, self.positions = prompts["attention_mask"], prompts["position_ids"]

    def extend(self, parents: Sequence[int], tokens: Sequence[Sequence[int]]) -> None:
        from ..score.decoding import one_token_step

        lengths = {len(t) for t in tokens}
        if len(lengths) != 1:
            raise ValueError(f"answers so far continued by different numbers of tokens {sorted(lengths)}: the joint "
                             "answer's wording must tokenize alike on every row")
        device = self.logits.device
        index = torch.as_tensor(list(parents), dtype=torch.long, device=device)
        self.cache.reorder_cache(index)  # the parents are not asked for again
        self.logits, self.mask = self.logits[index], self.mask[index]
        self.positions = self.positions.index_select(-2, index)
        steps = torch.tensor([list(t) for t in tokens], dtype=torch.long, device=device)
        with torch.no_grad():
            for t in range(steps.shape[1]):
                self.logits, self.mask, step_positions, self.cache = one_token_step(
                    self.model, steps[:, t:t + 1], self.mask, self.positions, self.cache)
                self.positions = torch.cat([self.positions, step_positions], dim=-1)

    def second(self, picked: torch.Tensor, digits: torch.Tensor) -> torch.Tensor:
        """(M, V) the logits after entry ``picked[m]`` and first digit ``digits[m]`` (its index 0..4)."""
        import copy

        from ..score.decoding import continuation_logits

        device = self.logits.device
        with torch.no_grad():
            ids = self.grid.first_ids.to(device)[digits.to(device)]
            return continuation_logits(self.model, {"attention_mask": self.mask, "position_ids": self.positions},
                                       copy.deepcopy(self.cache), picked.to(device), ids)


def token_distribution(logits: torch.Tensor, temperature: float = 1.0, top_p: float = 1.0) -> torch.Tensor:
    """softmax(logits / T), then the smallest set of most likely tokens holding top_p of it, renormalised
    (as ``generate``'s temperature and top-p warpers), in float32 as ``generate`` computes it."""
    q = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        ordered, order = q.sort(dim=-1, descending=True)
        before = ordered.cumsum(dim=-1) - ordered  # mass of the more likely tokens
        keep = torch.zeros_like(q, dtype=torch.bool).scatter(-1, order, before < top_p)
        q = torch.where(keep, q, torch.zeros_like(q))
        q = q / q.sum(dim=-1, keepdim=True)
    return q


def _draw(q: torch.Tensor, n: int, generator: Optional[torch.Generator]) -> torch.Tensor:
    return torch.multinomial(q.float().cpu(), n, replacement=True, generator=generator)


def sample_completions(first: torch.Tensor, second: Any, n: Any, grid: Optional[ScoreGrid] = None,
                       levels: Optional[LevelTokens] = None, temperature: float = 1.0, top_p: float = 1.0,
                       generator: Any = None) -> list[list[int]]:
    """``n`` answers per prompt (row b's are rows b·n .. b·n + n − 1 of the result), each a token list.

    Integers: the first token from the first position's distribution; a first digit 1..5 is followed by a token
    from the distribution after it, and the answer is valid when that is a digit (0 after 5); any other token
    ends the answer (unreadable). One-token grids: the token alone. Levels: the distinguishing token; a level's
    is followed by the rest of its word (its tokens teacher-forced), another ends the answer. ``second``: the
    logits after each first digit (B, 5, V), or a function of (rows, digits) giving them for the pairs the
    drawn answers take (:func:`answer_logits` with ``lazy``). ``generator``: one for all, or a list of one per
    prompt row (each prompt's answers then do not depend on the other prompts of the batch). ``n``: the answers
    of every row, or a list of each row's.
    """
    q = token_distribution(first, temperature, top_p)
    counts = [n] * q.shape[0] if isinstance(n, int) else list(n)
    if isinstance(generator, (list, tuple)):  # one generator per prompt: its answers whatever the batch
        drawn = [_draw(q[b:b + 1], counts[b], generator[b])[0].tolist() for b in range(q.shape[0])]
    elif isinstance(n, int):
        drawn = _draw(q, n, generator).tolist()  # (B, n)
    else:
        drawn = [_draw(q[b:b + 1], counts[b], generator)[0].tolist() for b in range(q.shape[0])]
    out: list[list[int]] = []
    if levels is not None:
        shared, ids = list(levels.shared_prefix), levels.ids.tolist()
        for token in (t for ts in drawn for t in ts):
            out.append(list(levels.paths[ids.index(token)]) if token in ids else shared + [token])
        return out
    if grid is None:
        raise ValueError("sample_completions needs the score grid or the level tokens")
    first_ids = grid.first_ids.tolist()
    takers: dict[tuple[int, int], list[int]] = {}  # (prompt row, first digit) -> the answers that drew it
    for row, answers in enumerate(drawn):
        for token in answers:
            if grid.steps == 2 and token in first_ids:
                takers.setdefault((row, first_ids.index(token)), []).append(len(out))
            out.append([token])
    if grid.steps == 1:
        return out
    pairs = sorted(takers)
    if callable(second):  # step only the (prompt, first digit) pairs drawn
        # stepped even when no digit was drawn (one row, unused): under ZeRO-3 every process runs the same forwards
        asked = pairs or [(0, 0)]
        logits = second(torch.tensor([r for r, _ in asked]), torch.tensor([d for _, d in asked]))[:len(pairs)]
    elif pairs:
        logits = second[[r for r, _ in pairs], [d for _, d in pairs]]
    if not pairs:
        return out
    # one distribution per pair, all its answers' second tokens drawn from it at once
    q = token_distribution(logits, temperature, top_p)
    for m, pair in enumerate(pairs):
        rng = generator[pair[0]] if isinstance(generator, (list, tuple)) else generator
        for k, token in zip(takers[pair], _draw(q[m:m + 1], len(takers[pair]), rng)[0].tolist()):
            out[k].append(token)
    return out


@dataclass
class Completions:
    """A batch with each row's completion written after its prompt, ready for one teacher-forced forward."""

    inputs: dict[str, Any]  # model inputs (no labels)
    targets: torch.Tensor  # (B, W) next-token targets: the completion's tokens, IGNORE_INDEX elsewhere
    mask: torch.Tensor  # (B, T) 1 on the completion tokens (T = the longest completion)
    tokens: torch.Tensor  # (B, T) the completion tokens (pad where mask is 0)


def completion_batch(batch: dict[str, Any], starts: torch.Tensor, completions: Sequence[Sequence[int]],
                     pad_id: int, drawn: Optional[Sequence[Sequence[int]]] = None) -> Completions:
    """Row i = its prompt (tokens before ``starts[i]``), then ``completions[i]``, right-padded.

    Positions continue the prompt's: every completion token is a text token, one further on each rope axis.
    ``drawn``: per completion token 1 when the policy drew it, 0 when it was written for the model (a joint
    answer's wording): the mask; default all drawn.
    """
    size = batch["input_ids"].shape[0]
    ends = [int(starts[i]) + len(completions[i]) for i in range(size)]
    width = max(ends)
    longest = max(len(c) for c in completions)
    device = batch["input_ids"].device
    input_ids = torch.full((size, width), pad_id, dtype=torch.long, device=device)
    attention = torch.zeros((size, width), dtype=batch["attention_mask"].dtype, device=device)
    targets = torch.full((size, width), IGNORE_INDEX, dtype=torch.long, device=device)
    mask = torch.zeros((size, longest), dtype=torch.long, device=device)
    tokens = torch.full((size, longest), pad_id, dtype=torch.long, device=device)
    position_ids = batch.get("position_ids")
    positions = None
    if position_ids is not None:
        positions = position_ids.new_ones((*position_ids.shape[:-1], width))
    for i in range(size):
        s, completion = int(starts[i]), torch.tensor(list(completions[i]), dtype=torch.long, device=device)
        n = completion.numel()
        input_ids[i, :s] = batch["input_ids"][i, :s]
        input_ids[i, s:s + n] = completion
        attention[i, :s] = batch["attention_mask"][i, :s]  # a left-padded batch keeps its pads
        attention[i, s:s + n] = 1
        if n:
            targets[i, s - 1:s - 1 + n] = completion  # position t predicts token t + 1
            mask[i, :n] = 1 if drawn is None else torch.tensor(list(drawn[i]), dtype=torch.long, device=device)
            tokens[i, :n] = completion
        if positions is not None:
            prefix = position_ids[..., i, :s]
            positions[..., i, :s] = prefix
            positions[..., i, s:s + n] = prefix[..., -1:] + torch.arange(1, n + 1, device=device)
    inputs = {k: v for k, v in batch.items() if k not in SEQUENCE_KEYS and k != "rope_deltas"}
    inputs.update(input_ids=input_ids, attention_mask=attention)
    if positions is not None:
        inputs["position_ids"] = positions
    return Completions(inputs=inputs, targets=targets, mask=mask, tokens=tokens)


def completion_logps(model: Any, completions: Completions, temperature: float = 1.0) -> torch.Tensor:
    """(B, T) log π(o_t | prompt, o_<t) of each drawn completion token (0 where the mask is 0), with gradient
    when the caller has it on; the output layer runs at the completions' positions only. π is the policy the
    answers were sampled from: the logits divided by the rollouts' ``temperature``, as TRL's GRPOTrainer does."""
    targets = completions.targets
    positions = (targets != IGNORE_INDEX).any(dim=0).nonzero().flatten()
    outputs = forward_at(model, completions.inputs, positions)
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    kept = targets[:, positions]  # (B, K)
    logps = torch.log_softmax(logits.float() / temperature, dim=-1)
    logps = logps.gather(-1, kept.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    labelled = kept != IGNORE_INDEX
    # the k-th labelled position of a row holds its k-th completion token
    slot = labelled.long().cumsum(dim=1) - 1
    out = logps.new_zeros(completions.mask.shape)
    rows, cols = labelled.nonzero(as_tuple=True)
    out[rows, slot[rows, cols]] = logps[rows, cols]
    return out * completions.mask.to(out.device, out.dtype)  # a token written for the model is no action


def joint_wording(input_ids: torch.Tensor, labels: torch.Tensor, scores: int, steps: int) -> list[list[list[int]]]:
    """Each row's tokens between its joint answer's scores (``", temporal "``: ``scores`` − 1 lists a row), read
    from the row itself: its labelled runs are the scores (``steps`` tokens each, the digit mask keeps those
    only), the tokens between two runs the wording as the SFT answer was tokenized."""
    out = []
    for row in range(labels.shape[0]):
        positions = (labels[row] != IGNORE_INDEX).nonzero().flatten().tolist()
        runs = [[p] for p in positions[:1]]
        for p in positions[1:]:
            if p == runs[-1][-1] + 1:
                runs[-1].append(p)
            else:
                runs.append([p])
        if len(runs) != scores or any(len(run) != steps for run in runs):
            raise ValueError(f"batch row {row}: a joint answer holds {scores} scores of {steps} token(s) each; its "
                             f"labels hold runs of {[len(run) for run in runs]}")
        out.append([input_ids[row, a[-1] + 1:b[0]].tolist() for a, b in zip(runs, runs[1:])])
    return out


def joint_drawn(wording: Sequence[Sequence[int]], steps: int, length: int) -> list[int]:
    """The ``drawn`` flags (see :func:`completion_batch`) of a joint completion of ``length`` tokens: each
    score's ``steps`` tokens drawn, the ``wording`` between them written (an answer that left the grid ends
    within a score)."""
    flags = [1] * steps
    for between in wording:
        flags += [0] * len(between) + [1] * steps
    return flags[:length]

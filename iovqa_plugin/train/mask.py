"""The digit-only label mask: loss on the score's tokens and nothing else.

LLaMA-Factory's SFT labels for a ``qwen2_vl`` answer hold the score's tokens,
``<|im_end|>`` and ``\\n``. The mask keeps only the tokens of the score: the
first run of consecutive "number" tokens in the label span. A token is a
number token when its text contains a digit (for decimal labels, a lone "."
also continues the run). That is a definition on the text of the score, so it
holds for tokenizers that split digits (Qwen: "3", "7") and for ones that
group them (Llama-3: "37") alike.

An answer that holds several scores (the ``joint`` layout of several quality
dimensions: "traditional 37, alignment 41, ...", whose words carry no digit)
keeps its first N runs of number tokens, N the number of scores, each of
which must hold a complete score; with one score the rule above is used as is.

The mask is a handful of tensor operations over the whole padded batch (no
Python loop over tokens). A sample whose labels hold no score, or a score
with the wrong number of digits (cut by ``cutoff_len``), is an error: it
would otherwise train on nothing, silently.

Level-word labels (``mask_level_labels``) keep the level word's tokens, as
the chat template writes them (see ``data.levels``), and nothing else.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from ..data.labels import IGNORE_INDEX

SCORE_DIGITS = 2  # "10".."50" and "1.0".."5.0" both have two digits (each format's score_digits)

_TABLES: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


class LabelMaskError(ValueError):
    """A training sample whose labels do not hold a complete score."""


_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")  # sentencepiece byte fallback


def _token_text(token: str) -> str:
    """Readable text of a vocabulary entry: byte-fallback pieces decoded, space markers dropped."""
    match = _BYTE_TOKEN.match(token)
    if match:
        return chr(int(match.group(1), 16))
    return token.replace("\u0120", " ").replace("\u2581", " ")  # byte-level "Ġ", sentencepiece "▁"


def token_tables(tokenizer: Any, label_format: str = "integer") -> tuple[torch.Tensor, torch.Tensor]:
    """(is_number[vocab], digit_count[vocab]) for ``tokenizer``, cached per tokenizer.

    Built from the vocabulary strings (digits are literal characters in
    byte-level BPE and sentencepiece vocabularies alike), so it takes a
    fraction of a second even for 150k tokens. Special and added tokens (such
    as ``<LABEL_1>``) are never numbers.
    """
    from ..data.label_formats import get_label_format

    marks = get_label_format(label_format).number_marks  # decimal labels: a lone "." continues the score
    size = len(tokenizer)
    key = (getattr(tokenizer, "name_or_path", ""), type(tokenizer).__name__, size, marks)
    if key not in _TABLES:
        pieces = tokenizer.convert_ids_to_tokens(list(range(size)))
        texts = [_token_text(p) if p is not None else "" for p in pieces]
        for token_id in set(tokenizer.all_special_ids) | set(tokenizer.get_added_vocab().values()):
            if 0 <= token_id < size:
                texts[token_id] = ""
        digits = torch.tensor([sum(c in "0123456789" for c in t) for t in texts], dtype=torch.long)
        is_number = digits > 0
        if marks:
            is_number |= torch.tensor([t.strip() in marks for t in texts], dtype=torch.bool)
        _TABLES[key] = (is_number, digits)
    return _TABLES[key]


def score_mask(labels: torch.Tensor, is_number: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the first run of number tokens among the labelled positions of each row."""
    labelled = labels != IGNORE_INDEX
    ids = labels.clamp(0, is_number.numel() - 1)
    number = labelled & is_number.to(labels.device)[ids]
    started = number.long().cumsum(dim=1) > 0
    # a labelled non-number token after the start ends the run
    ended = (started & labelled & ~number).long().cumsum(dim=1) > 0
    return number & ~ended


def score_runs(labels: torch.Tensor, is_number: torch.Tensor) -> torch.Tensor:
    """(B, L) run number (1, 2, ...) of each number token among the labelled positions; 0 elsewhere.

    A run is a maximal stretch of number tokens; any other token (labelled or not) ends it.
    """
    labelled = labels != IGNORE_INDEX
    ids = labels.clamp(0, is_number.numel() - 1)
    number = labelled & is_number.to(labels.device)[ids]
    before = torch.nn.functional.pad(number, (1, 0), value=False)[:, :-1]
    starts = number & ~before
    return starts.long().cumsum(dim=1) * number


def _mask_score_runs(labels: torch.Tensor, is_number: torch.Tensor, digit_count: torch.Tensor,
                     expected_digits: int, scores: int) -> torch.Tensor:
    """The first ``scores`` runs of number tokens, each a complete score (else LabelMaskError)."""
    run = score_runs(labels, is_number)
    keep = (run > 0) & (run <= scores)
    ids = labels.clamp(0, digit_count.numel() - 1)
    digits = torch.zeros(labels.shape[0], scores + 1, dtype=torch.long, device=labels.device)
    digits.scatter_add_(1, run.clamp(max=scores) * keep, digit_count.to(labels.device)[ids] * keep)
    per_score = digits[:, 1:]
    bad = (per_score != expected_digits).any(dim=1).nonzero().flatten().tolist()
    if bad:
        found = per_score[bad].tolist()
        raise LabelMaskError(
            f"batch row(s) {bad}: the response labels hold {found} digit(s) per score, expected {expected_digits} "
            f"for each of {scores} scores. The response misses a score, or cutoff_len cut it off (raise cutoff_len "
            "or lower video_max_pixels)."
        )
    return torch.where(keep, labels, torch.full_like(labels, IGNORE_INDEX))


def mask_labels(
    labels: torch.Tensor, is_number: torch.Tensor, digit_count: torch.Tensor, expected_digits: int = SCORE_DIGITS,
    scores: int = 1,
) -> torch.Tensor:
    """Labels with everything but the score's tokens set to IGNORE_INDEX.

    ``scores``: how many scores each answer holds (the joint layout's dimensions).
    Raises :class:`LabelMaskError` naming the batch rows without a complete score (or scores).
    """
    if scores > 1:
        return _mask_score_runs(labels, is_number, digit_count, expected_digits, scores)
    keep = score_mask(labels, is_number)
    ids = labels.clamp(0, digit_count.numel() - 1)
    digits = (digit_count.to(labels.device)[ids] * keep).sum(dim=1)
    bad = (digits != expected_digits).nonzero().flatten().tolist()
    if bad:
        found = digits[bad].tolist()
        raise LabelMaskError(
            f"batch row(s) {bad}: the response labels hold {found} score digit(s), expected {expected_digits}. "
            "The response has no score, or cutoff_len cut it off (raise cutoff_len or lower video_max_pixels)."
        )
    return torch.where(keep, labels, torch.full_like(labels, IGNORE_INDEX))


def mask_level_labels(labels: torch.Tensor, levels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Level-word labels: (labels with everything but the level word's tokens set to IGNORE_INDEX, level 1..5 per row).

    ``levels`` is a ``data.levels.LevelTokens``. Each row's labelled span must start with the template's
    lead (``levels.lead``: a reasoning template's empty think block, masked) and then exactly one level
    word's token path (one token or several); those tokens are kept, the template's ending is masked.
    Raises :class:`LabelMaskError` naming the rows that hold no level word.
    """
    lead = list(levels.lead)
    labelled = labels != IGNORE_INDEX
    keep = torch.zeros_like(labelled)
    found, bad = [], []
    for row in range(labels.shape[0]):
        positions = labelled[row].nonzero().flatten()
        span = labels[row, positions].tolist()
        match = [i for i, path in enumerate(levels.paths) if span[: len(lead) + len(path)] == lead + list(path)]
        if len(match) != 1:
            bad.append(row)
            continue
        keep[row, positions[len(lead): len(lead) + len(levels.paths[match[0]])]] = True
        found.append(match[0] + 1)
    if bad:
        raise LabelMaskError(
            f"batch row(s) {bad}: the response labels do not start with a level word's tokens "
            f"(token paths {[list(p) for p in levels.paths]}, after the template's {lead}). The response is not a level word, or cutoff_len "
            "cut it off (raise cutoff_len or lower video_max_pixels)."
        )
    masked = torch.where(keep, labels, torch.full_like(labels, IGNORE_INDEX))
    return masked, torch.tensor(found, dtype=torch.long)


def masked_texts(labels: torch.Tensor, tokenizer: Any) -> list[str]:
    """The text each row of ``labels`` trains on (its tokens that are not IGNORE_INDEX)."""
    return [tokenizer.decode(row[row != IGNORE_INDEX]) for row in labels]


def trained_texts(labels: torch.Tensor, tokenizer: Any, names: tuple[str, ...] = ()) -> list[str]:
    """What each row of masked ``labels`` trains on, for logs: each run of consecutive kept tokens (a score, a
    level word) decoded apart, so a joint answer's scores do not run together. With ``names`` (the joint
    layout's dimensions, one score each) a row reads like its answer: "sharpness 32, motion 49"."""
    from ..data.dimensions import joint_answer

    texts = []
    for row in labels.tolist():
        runs, run = [], []
        for token in row + [IGNORE_INDEX]:
            if token != IGNORE_INDEX:
                run.append(token)
            elif run:
                runs, run = runs + [tokenizer.decode(run)], []
        if names and len(names) == len(runs):
            texts.append(joint_answer(dict(zip(names, runs)), names))
        else:
            texts.append(" ".join(runs))
    return texts


def mos_from_labels(labels: torch.Tensor, tokenizer: Any) -> torch.Tensor:
    """The MOS of each row, read back from its masked integer label ("37" -> 3.7)."""
    return torch.tensor([int(text) / 10 for text in masked_texts(labels, tokenizer)], dtype=torch.float32)

"""The GRPO rewards: a registry of pure functions, each with its formula (and source) in its docstring.

Every reward takes the batch's rollouts at once, ``reward(answers, rows, **arguments) -> list[float]``:

* ``answers``: one :class:`~iovqa_plugin.rl.answers.Answer` per rollout (its text and what was read from it);
* ``rows``: one mapping per rollout with what the data gives: ``mos`` (the MOS, 1..5), ``dimensions``
  ({name: MOS}, joint answers), ``choice`` ("A"/"B"/"yes"/"no", preference and yes/no rows), ``group`` (the
  prompt the rollout answers: rollouts of one prompt share it) and ``shuffled`` (a temporal rollout, whose
  frames were shuffled);
* ``arguments``: the reward's keys in ``iovqa_grpo_rewards`` (e.g. ``sigma``).

An answer that gives no value gets 0 from the score rewards, never an exception; a row without the field a
reward needs (a ``choice`` reward on rows without a choice label) is a data error and raises
:class:`RewardInputError`. A user reward ``module:function`` has the same signature (EasyR1's
``reward_function=file.py:compute_score`` is the model). The run's reward is the weighted sum
(:func:`combine`).

Standard library only: the registry is checked while recipes are read.
"""

from __future__ import annotations

import importlib
import math
from collections import defaultdict
from dataclasses import dataclass
from statistics import fmean
from typing import Any, Callable, Mapping, Optional, Sequence

from ..registry import Registry
from .answers import Answer

Rows = Sequence[Mapping[str, Any]]
Reward = Callable[..., list]


class RewardInputError(ValueError):
    """A row lacks what a reward needs (the message names the reward and the field)."""


def _mos(row: Mapping[str, Any], reward: str) -> float:
    if row.get("mos") is None:
        raise RewardInputError(f"reward {reward!r} needs each row's MOS, row {dict(row)!r} has none")
    return float(row["mos"])


def format_reward(answers: Sequence[Answer], rows: Rows) -> list[float]:
    """``format`` (VisualQuality-R1, Q-Insight, VQ-Insight): r = 1 when the text is exactly
    ``<think>…</think><answer>…</answer>`` (white space around the blocks allowed) and the answer block holds a
    readable value (a score on the label grid, every dimension, or a choice); else 0."""
    return [1.0 if a.well_formed else 0.0 for a in answers]


def score_relative(answers: Sequence[Answer], rows: Rows) -> list[float]:
    """``score_relative`` (VQ-Insight's scoring reward, its code): r = 1 − min(1, |pred − gt| / |gt|), pred and
    gt on the MOS scale (1..5); no score read: 0."""
    out = []
    for answer, row in zip(answers, rows):
        gt = _mos(row, "score_relative")
        out.append(0.0 if answer.score is None else 1.0 - min(1.0, abs(answer.score - gt) / abs(gt)))
    return out


def score_threshold(answers: Sequence[Answer], rows: Rows, threshold: float = 0.35) -> list[float]:
    """``score_threshold`` (Q-Insight): r = 1 if |pred − gt| < threshold (0.35 on the 1..5 scale), else 0; no
    score read: 0."""
    return [float(a.score is not None and abs(a.score - _mos(r, "score_threshold")) < threshold)
            for a, r in zip(answers, rows)]


def score_gaussian(answers: Sequence[Answer], rows: Rows, sigma: float = 0.5) -> list[float]:
    """``score_gaussian``: r = exp(−d² / (2σ²)), d = pred − gt (MOS units), σ = 0.5; no score read: 0."""
    return [0.0 if a.score is None else math.exp(-((a.score - _mos(r, "score_gaussian")) ** 2) / (2 * sigma**2))
            for a, r in zip(answers, rows)]


TIERS = {0: 1.0, 1: 0.7, 2: 0.4, 3: 0.1}  # VideoScore2: total error -> reward, when no dimension is off by > 1


def score_tiered(answers: Sequence[Answer], rows: Rows, unit: float = 1.0) -> list[float]:
    """``score_tiered`` (VideoScore2): with e_j = |round(pred_j / unit) − round(gt_j / unit)| per dimension j
    (the answer's dimensions for joint answers, else the one score; unit 1 = VideoScore2's integer scale):
    r = 1.0 when Σ e_j = 0; 0.7 / 0.4 / 0.1 when every e_j ≤ 1 and Σ e_j = 1 / 2 / 3; else 0. A dimension
    not read: 0."""
    out = []
    for answer, row in zip(answers, rows):
        pairs = _dimension_pairs(answer, row, "score_tiered")
        if any(pred is None for pred, _ in pairs):
            out.append(0.0)
            continue
        errors = [abs(round(pred / unit) - round(gt / unit)) for pred, gt in pairs]
        out.append(TIERS.get(sum(errors), 0.0) if max(errors) <= 1 else 0.0)
    return out


def _dimension_pairs(answer: Answer, row: Mapping[str, Any], reward: str) -> list[tuple[Optional[float], float]]:
    """(predicted, true) MOS of each dimension of the row (its one MOS when it has no dimensions)."""
    truth = row.get("dimensions")
    if truth:
        return [(answer.dimensions.get(name), float(gt)) for name, gt in truth.items()]
    return [(answer.score, _mos(row, reward))]


def fidelity_rank(answers: Sequence[Answer], rows: Rows, epsilon: float = 1e-8) -> list[float]:
    """``fidelity_rank`` (VisualQuality-R1): for rollout k of prompt i and each other prompt j of the batch,
    p = Φ((q_ik − μ_j) / √(σ_i² + σ_j² + 1e-6)) where μ_j, σ_j² are the mean and (population) variance of the
    scores read from prompt j's rollouts; the target g = 1 / 0 / 0.5 as MOS_i >, <, = MOS_j;
    r = mean over j of √(p·g + ε) + √((1 − p)(1 − g) + ε), ε = 1e-8. Rollouts without a score, and prompts
    none of whose rollouts gave one, take no part (such a rollout gets 0); a batch of one prompt gives 0."""
    scores: dict[Any, list[float]] = defaultdict(list)
    mos: dict[Any, float] = {}
    for answer, row in zip(answers, rows):
        mos[row["group"]] = _mos(row, "fidelity_rank")
        if answer.score is not None:
            scores[row["group"]].append(answer.score)
    moments = {g: (fmean(s), fmean([(x - fmean(s)) ** 2 for x in s])) for g, s in scores.items()}
    out = []
    for answer, row in zip(answers, rows):
        i = row["group"]
        others = [j for j in moments if j != i]
        if answer.score is None or not others:
            out.append(0.0)
            continue
        terms = []
        for j in others:
            mean_j, var_j = moments[j]
            p = _phi((answer.score - mean_j) / math.sqrt(moments[i][1] + var_j + 1e-6))
            g = 1.0 if mos[i] > mos[j] else 0.0 if mos[i] < mos[j] else 0.5
            terms.append(math.sqrt(p * g + epsilon) + math.sqrt((1 - p) * (1 - g) + epsilon))
        out.append(fmean(terms))
    return out


def _phi(x: float) -> float:
    """The standard normal CDF."""
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def dimensions(answers: Sequence[Answer], rows: Rows, weights: Optional[Mapping[str, float]] = None,
               score: str = "score_relative") -> list[float]:
    """``dimensions`` (VQ-Insight's multi-dimension reward): r = Σ_j λ_j · s(pred_j, gt_j) / Σ_j λ_j over the
    row's dimensions j, where s is a score reward (``score``, default score_relative) and λ_j the weights
    (default 1 each, VQ-Insight's λ = 1); a dimension not read scores 0."""
    if score not in SCORE_REWARDS:
        raise RewardInputError(f"reward 'dimensions': score must be one of {list(SCORE_REWARDS)}, got {score!r}")
    base = REWARDS[score].function
    out = []
    for answer, row in zip(answers, rows):
        truth = row.get("dimensions")
        if not truth:
            raise RewardInputError(f"reward 'dimensions' needs each row's dimension MOS, row {dict(row)!r} has none")
        total, norm = 0.0, 0.0
        for name, gt in truth.items():
            lam = float((weights or {}).get(name, 1.0))
            single = Answer(text=answer.text, answer=answer.answer, score=answer.dimensions.get(name))
            total += lam * base([single], [{"mos": gt}])[0]
            norm += lam
        out.append(total / norm if norm else 0.0)
    return out


def choice(answers: Sequence[Answer], rows: Rows) -> list[float]:
    """``choice`` (VQ-Insight's preference and yes/no rewards): r = 1 when the answer's choice ("A"/"B", or
    "yes"/"no") equals the row's label, else 0 (no choice read: 0)."""
    out = []
    for answer, row in zip(answers, rows):
        label = row.get("choice")
        if label is None:
            raise RewardInputError(f"reward 'choice' needs rows with a choice label, row {dict(row)!r} has none")
        out.append(float(answer.choice is not None and answer.choice.lower() == str(label).strip().lower()))
    return out


def temporal(answers: Sequence[Answer], rows: Rows, alpha: float = 0.3, mu: float = 0.8,
             tolerance: float = 0.35) -> list[float]:
    """``temporal`` (Video-R1's T-GRPO, VQ-Insight's temporal modelling): each prompt is also rolled out with
    its frames shuffled (rows with ``shuffled``). A rollout is correct when |pred − gt| < tolerance (or its
    choice equals the label). With p the share of correct ordered rollouts of a prompt and p̃ that of its
    shuffled ones, each correct ordered rollout gets r = α when p ≥ μ·p̃ (α = 0.3, μ = 0.8, Video-R1's
    values), else 0; incorrect and shuffled rollouts get 0."""
    correct = []
    for answer, row in zip(answers, rows):
        if row.get("choice") is not None:
            correct.append(answer.choice is not None and answer.choice.lower() == str(row["choice"]).lower())
        else:
            correct.append(answer.score is not None and abs(answer.score - _mos(row, "temporal")) < tolerance)
    share: dict[tuple[Any, bool], list[bool]] = defaultdict(list)
    for ok, row in zip(correct, rows):
        share[(row["group"], bool(row.get("shuffled")))].append(ok)
    out = []
    for ok, row in zip(correct, rows):
        if row.get("shuffled") or not ok:
            out.append(0.0)
            continue
        ordered, shuffled = share[(row["group"], False)], share.get((row["group"], True))
        if not shuffled:
            raise RewardInputError("reward 'temporal' needs the shuffled-frame rollouts of each prompt; group "
                                   f"{row['group']!r} has none")
        out.append(alpha if fmean(ordered) >= mu * fmean(shuffled) else 0.0)
    return out


def length(answers: Sequence[Answer], rows: Rows, min_words: int = 20, max_words: int = 300,
           bonus: float = 1.0) -> list[float]:
    """``length`` (VQ-Insight's length control): r = bonus when the reasoning (inside <think>) has between
    min_words and max_words words (white-space separated; the plugin's default window 20..300), else 0; no
    think block: 0."""
    return [bonus if a.reasoning is not None and min_words <= len(a.reasoning.split()) <= max_words else 0.0
            for a in answers]


@dataclass(frozen=True)
class RewardKind:
    """A registered reward: its name in iovqa_grpo_rewards, its function, whether it reads the reasoning, and
    which rows it rewards."""

    name: str
    function: Reward
    thinking_only: bool = False  # it rewards the reasoning's form: thinking answers only
    # the row fields it compares answers with: it rewards the rows that have one ("mos": score rows, "choice":
    # preference and yes/no rows, "dimensions": joint rows); None: every row (a user reward too)
    reads: Optional[tuple[str, ...]] = None


REWARDS: Registry[RewardKind] = Registry("reward", "iovqa_grpo_rewards")
register_reward = REWARDS.register
for _name, _function, _thinking, _reads in (
    ("format", format_reward, True, None),
    ("score_relative", score_relative, False, ("mos",)),
    ("score_threshold", score_threshold, False, ("mos",)),
    ("score_gaussian", score_gaussian, False, ("mos",)),
    ("score_tiered", score_tiered, False, ("mos", "dimensions")),
    ("fidelity_rank", fidelity_rank, False, ("mos",)),
    ("dimensions", dimensions, False, ("dimensions",)),
    ("choice", choice, False, ("choice",)),
    ("temporal", temporal, False, None),
    ("length", length, True, None),
):
    register_reward(RewardKind(_name, _function, _thinking, _reads))
SCORE_REWARDS = ("score_relative", "score_threshold", "score_gaussian")


def reward_function(name: str) -> Reward:
    """The registered reward ``name``, or a user's ``module:function`` (imported)."""
    if name in REWARDS:
        return REWARDS[name].function
    module, sep, attribute = name.partition(":")
    if not sep or not module or not attribute:
        raise ValueError(f"a user reward is named module:function, got {name!r}")
    function = getattr(importlib.import_module(module), attribute)
    if not callable(function):
        raise ValueError(f"{name!r} is not a function")
    return function


def combine(answers: Sequence[Answer], rows: Rows, rewards: Mapping[str, Mapping[str, Any]], check: bool = True
            ) -> tuple[list[float], dict[str, list[Optional[float]]]]:
    """(weighted sum per rollout, {name: that reward per rollout}) for ``{name: {"weight": w, **arguments}}``.

    A reward that compares answers with a row field (:attr:`RewardKind.reads`) rewards the rows that have it
    (score rows, choice rows: a batch may mix them) and is None on the others (0 in the sum). A row kind that
    none of the rewards compares with is an error (``check``; a user reward may read any row): its answers
    would be rewarded for their form only."""
    reads = {name: REWARDS[name].reads if name in REWARDS else None for name in rewards}
    kinds = {kind for row in rows for kind in ("dimensions", "choice", "mos") if row.get(kind) is not None}
    compared = {kind for fields in reads.values() for kind in fields or ()}
    if check and not any(":" in name for name in rewards):
        for kind, what, add in (("choice", "preference or yes/no", "choice"),
                                ("mos", "score", "a score reward (score_relative, ...)"),
                                ("dimensions", "joint (several scores)", "dimensions or score_tiered")):
            if kind in kinds and kind not in compared and not (kind == "mos" and "dimensions" in compared):
                raise RewardInputError(
                    f"the batch has {what} rows, and none of the rewards {list(rewards)} compares their answers "
                    f"with their label: add {add} to iovqa_grpo_rewards")
    each: dict[str, list[Optional[float]]] = {}
    for name, spec in rewards.items():
        arguments = {k: v for k, v in spec.items() if k != "weight"}
        fields = reads[name]
        index = [k for k, row in enumerate(rows) if fields is None or any(row.get(f) is not None for f in fields)]
        values = [float(v) for v in reward_function(name)([answers[k] for k in index], [rows[k] for k in index],
                                                          **arguments)] if index else []
        if len(values) != len(index):
            raise RewardInputError(f"reward {name!r} returned {len(values)} values for {len(index)} answers")
        out: list[Optional[float]] = [None] * len(answers)
        for k, value in zip(index, values):
            out[k] = value
        each[name] = out
    total = [sum(float(rewards[name].get("weight", 1.0)) * (each[name][k] or 0.0) for name in rewards)
             for k in range(len(answers))]
    return total, each

"""Reading a rollout's answer: its reasoning, its value (score, dimension scores, a choice), whether it is well formed.

Two modes. *answer_only*: the text is the SFT answer ("37", "good", a joint line), read as the scorer reads
greedy answers (``data.labels.read_answer``, ``data.dimensions.read_joint_answer``). *thinking*:
``<think>reasoning</think><answer>value</answer>`` (VisualQuality-R1, Q-Insight, VQ-Insight); the value
inside ``<answer>`` is read the same way. Nothing here raises on a model's text: what cannot be read is
``None`` (the score rewards then give 0).

Standard library only (the reward registry is checked while recipes are read).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from ..data.dimensions import read_joint_answer
from ..data.label_formats import read_answer

MODES = ("answer_only", "thinking")
THINK_TAGS = ("<think>", "</think>")
ANSWER_TAGS = ("<answer>", "</answer>")
# the whole thinking answer: one think block, then one answer block, nothing else around them
_THINKING = re.compile(r"\s*<think>(?P<reasoning>.*?)</think>\s*<answer>(?P<answer>.*?)</answer>\s*", re.DOTALL)
_ANSWER = re.compile(r"<answer>(?P<answer>.*?)</answer>", re.DOTALL)
_REASONING = re.compile(r"<think>(?P<reasoning>.*?)</think>", re.DOTALL)
CHOICES = ("A", "B", "tie", "yes", "no")  # a preference (the default choice words) or a yes/no answer


@dataclass(frozen=True)
class Answer:
    """One rollout's text and what was read from it."""

    text: str
    answer: Optional[str]  # the value's text: inside <answer> (thinking) or the whole text; None: no answer block
    reasoning: Optional[str] = None  # inside <think> (thinking mode)
    well_formed: bool = False  # thinking: exactly one think block then one answer block; answer_only: a value read
    score: Optional[float] = None  # the MOS (1..5) the answer gives, None when it gives none
    dimensions: dict = field(default_factory=dict)  # joint answers: {dimension: MOS}, the dimensions read
    choice: Optional[str] = None  # one of the choice words ("A", "B", "tie"), "yes" or "no"

    @property
    def parsed(self) -> bool:
        """A value was read (a score, every dimension, or a choice)."""
        return self.score is not None or bool(self.dimensions) or self.choice is not None


def read_choice(text: Optional[str], words: tuple[str, ...] = CHOICES) -> Optional[str]:
    """The word of ``words`` a preference / yes-no answer gives ("Video A", "yes.", "Yes"), as ``words`` spells
    it, else None."""
    found = re.match(r"^\s*(?:(?:video|image|option)\s+)?(" + "|".join(map(re.escape, words)) + r")\b[\s.!]*$",
                     text or "", re.IGNORECASE)
    if found is None:
        return None
    return next(word for word in words if word.lower() == found.group(1).lower())


def label_row(text: str, label_format: str = "integer", words: tuple[str, ...] = CHOICES) -> Optional[dict]:
    """What a training row's label gives the rewards: ``{"choice": word}`` for a preference or yes/no label,
    ``{"mos": MOS}`` for a score, None for neither."""
    choice = read_choice(text, words)
    if choice is not None:
        return {"choice": choice}
    score = read_answer(text.strip(), label_format)[0]
    return None if score is None else {"mos": score}


def parse_answer(text: str, mode: str = "answer_only", label_format: str = "integer",
                 dimensions: tuple[str, ...] = (), words: tuple[str, ...] = CHOICES) -> Answer:
    """Read one rollout. ``dimensions``: the joint answer's dimensions (several), else () for one score;
    ``words``: the choice words a preference or yes/no answer is read as."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    text = text or ""
    reasoning = None
    if mode == "thinking":
        whole = _THINKING.fullmatch(text)
        block = whole or _ANSWER.search(text)
        value = block.group("answer").strip() if block else None
        thought = _REASONING.search(text)
        reasoning = thought.group("reasoning").strip() if thought else None
    else:
        whole, value = None, text.strip()
    score, read, choice = None, {}, None
    if value is not None:
        if len(dimensions) > 1:
            found = read_joint_answer(value, dimensions, label_format)
            if all(mos is not None for mos, _ in found.values()):
                read = {name: mos for name, (mos, _) in found.items()}
        else:
            choice = read_choice(value, words)
            if choice is None:
                score = read_answer(value, label_format)[0]
    well_formed = (score is not None or bool(read) or choice is not None) and (mode == "answer_only" or bool(whole))
    return Answer(text=text, answer=value, reasoning=reasoning, well_formed=well_formed, score=score,
                  dimensions=read, choice=choice)

"""Scoring videos with a trained IOVQA model.

The model and its inputs come from the inference loader
(``iovqa_plugin.patches.inference``): loaded the way LLaMA-Factory loads it
for inference, with every input built by LLaMA-Factory's own template,
multimodal plugin and collator and the plugin configuration of the training
run, so prompt and frames are exactly those of training.

Decoding modes (see ``decoding``):

* ``greedy``: temperature-0 generation (the paper); the first number in the
  answer (after a think block, if the model writes one), /10. An answer without a number, or with a number outside the
  label grid, is recorded as such (``greedy_error``; in greedy mode also
  ``error``), never turned into a MOS.
* ``expected``: the expectation of the score over the integer grid 10..50,
  its standard deviation (an uncertainty) and the probability mass on valid
  integers.
* ``both``: both; ``pred_mos`` is the expected score.
* ``head``: for models trained with the softmax-regression head: the head's
  expected grade and the five grade probabilities.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

from ..data.frames import FrameCache, FrameSpec
from ..data.labels import read_answer
from ..data.prompt import build_prompt
from . import decoding
from .results import MODES, VideoResult
from .settings import ScorerSettings


class Scorer:
    """A loaded model that turns (video, text prompt) pairs into MOS predictions."""

    def __init__(self, settings: ScorerSettings):
        from ..data.grid import ScoreGrid
        from ..patches.inference import InferenceModel
        from ..train.head import HeadForward

        self.settings = settings
        self.plugin = plugin = settings.plugin
        self.loaded = InferenceModel(settings.model, settings.adapter, settings.template, settings.model_keys, plugin,
                                     device=settings.device)
        self.cache = FrameCache(plugin.cache_dir, FrameSpec(plugin.num_frames, plugin.frame_strategy, plugin.frame_format))
        self.grid = ScoreGrid.from_tokenizer(self.loaded.tokenizer) if plugin.label_format == "integer" else None
        self.head = HeadForward(self.loaded.model, self.loaded.tokenizer) if plugin.head_on else None

    def encode(self, prompt_text: str, frames: list[str]) -> dict[str, Any]:
        """One sample's features: the training prompt for this text and these frames, without the answer."""
        prompt = build_prompt(prompt_text[: self.plugin.max_prompt_chars], self.plugin.label_format,
                              self.plugin.prompt_template, self.plugin.head_on)
        return self.loaded.encode(prompt, frames)

    def batch(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        return self.loaded.batch(features)

    def greedy(self, batch: dict[str, Any]) -> list[str]:
        """Temperature-0 answers (the paper's decoding)."""
        loaded = self.loaded
        return decoding.greedy(loaded.model, batch, loaded.tokenizer, loaded.stop_ids,
                               loaded.mm_token_type_ids(batch["input_ids"]), self.plugin.label_format,
                               thought_tags=loaded.thought_tags)

    def distribution(self, batch: dict[str, Any]):
        """(p(n) over 10..50, probability mass on valid integers)."""
        if self.grid is None:
            raise ValueError("expected-score decoding needs integer labels (iovqa_label_format: integer)")
        return decoding.distribution(self.loaded.model, batch, self.grid)

    def score_features(self, videos: list[str], features: list[dict[str, Any]], mode: str) -> list[VideoResult]:
        from ..data.grid import expected_mos

        batch = self.batch(features)
        if mode == "head":
            if self.head is None:
                raise ValueError("mode 'head' needs a model trained with iovqa_head: softmax_regression")
            mean, grades = decoding.head_scores(self.loaded.model, batch, self.head)
            return [VideoResult(video=v, mode="head", head_mos=float(mean[i]), grades=grades[i].tolist())
                    for i, v in enumerate(videos)]
        results = [VideoResult(video=v, mode=mode) for v in videos]
        if mode in ("greedy", "both"):
            for result, text in zip(results, self.greedy(batch)):
                result.greedy_text = text
                answer = decoding.answer_text(text, self.loaded.thought_tags)
                result.greedy_mos, reason = read_answer(answer, self.plugin.label_format)
                if reason is not None:  # never a MOS: no number, or one off the label grid
                    result.greedy_error = reason
                    if mode == "greedy":
                        result.error = f"greedy {reason}"
        if mode in ("expected", "both"):
            probabilities, mass = self.distribution(batch)
            mean, std = expected_mos(probabilities)
            for i, result in enumerate(results):
                result.expected_mos = float(mean[i])
                result.expected_std = float(std[i])
                result.integer_mass = float(mass[i])
                result.probabilities = probabilities[i].tolist()
        return results

    def score_rows(self, rows: Iterable[tuple[str, str, str]], mode: str = "expected",
                   batch_size: int = 4) -> Iterator[VideoResult]:
        """Yield a :class:`VideoResult` per (video id, video path, text prompt); failures become error rows."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        pending: list[tuple[str, dict]] = []
        for video, path, prompt in rows:
            try:
                pending.append((video, self.encode(prompt, self.cache.get(path))))
            except Exception as err:  # one bad video must not stop the run
                yield VideoResult(video=video, mode=mode, error=f"{type(err).__name__}: {err}")
                continue
            if len(pending) == batch_size:
                yield from self._score_pending(pending, mode)
                pending = []
        if pending:
            yield from self._score_pending(pending, mode)

    def _score_pending(self, pending, mode):
        videos = [v for v, _ in pending]
        try:
            yield from self.score_features(videos, [f for _, f in pending], mode)
        except Exception as err:
            if len(pending) == 1:
                yield VideoResult(video=videos[0], mode=mode, error=f"{type(err).__name__}: {err}")
                return
            for item in pending:  # find the failing one(s): score one by one
                yield from self._score_pending([item], mode)

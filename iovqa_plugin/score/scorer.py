"""Scoring videos (and images: a row whose medium is one is asked with the image prompt, as trained) with a
trained IOVQA model.

The model and its inputs come from the inference loader
(``iovqa_plugin.patches.inference``): loaded the way LLaMA-Factory loads it
for inference, with every input built by LLaMA-Factory's own template,
multimodal plugin and collator and the plugin configuration of the training
run, so prompt and frames are exactly those of training.

Decoding modes (see ``decoding``):

* ``greedy``: temperature-0 generation (the paper); the first number in the
  answer (after a think block, if the model writes one: its text is the
  ``reasoning`` column), /10. An answer without a number, or with a number outside the
  label grid, is recorded as such (``greedy_error``; in greedy mode also
  ``error``), never turned into a MOS.
* ``expected``: the expectation of the score over the integer grid 10..50,
  its standard deviation (an uncertainty) and the probability mass on valid
  integers. Level-word runs: Q-Align's expected score, the softmax over the
  five level tokens dotted with 1..5, its standard deviation, the mass on the
  level tokens (``integer_mass``) and the five probabilities (``p_bad`` ..
  ``p_excellent``). Greedy answers read their first level word (1..5).
* ``both``: both; ``pred_mos`` is the expected score.
* ``sampled``: n answers sampled at a temperature (``--samples``,
  ``--temperature``, ``--seed``; VisualQuality-R1 scores this way), each
  video's seeded by the run's seed and its id: ``pred_mos`` is the mean of
  the samples' scores, ``sampled_std`` their spread; samples without a
  score are counted (``sampled_unparseable``), never averaged in.
* ``head``: for models trained with the softmax-regression head: the head's
  expected grade and the five grade probabilities.

Several quality dimensions (``iovqa_dimensions``): every dimension gets its
own scores (``sampled`` excepted: one MOS per video) (columns ``<column>_<dimension>``, see ``results``). ``per_sample``
runs: each dimension is scored with its own prompt, as trained. ``joint``
runs: the answer's wording ("traditional 37, alignment 41, ...") is written
for the model, since the digit mask never trains it, and the scores are
decoded one by one, each after its name and the earlier scores as decoded
(greedy's text in ``greedy``/``both``, the rounded expected score where greedy
gave none or in ``expected``): one prefill per dimension.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

from ..data import dimensions as dims
from ..data.frames import FrameCache, FrameSpec
from ..data.images import IMAGE, VIDEO, media_kind
from ..data.label_formats import read_answer
from ..data.labels import IGNORE_INDEX
from ..data.prompt import cut_prompt
from . import decoding
from .modes import check_mode, get_scoring_mode
from .results import VideoResult
from .settings import ScorerSettings


def video_seed(seed: int, video: str) -> int:
    """The seed of one video's sampled answers: the run's seed and the video's id (stable across processes)."""
    import zlib

    return zlib.crc32(f"{seed}:{video}".encode("utf-8"))


class Scorer:
    """A loaded model that turns (video, text prompt) pairs into MOS predictions."""

    def __init__(self, settings: ScorerSettings):
        from ..data.grid import ScoreGrid
        from ..patches.inference import InferenceModel
        from ..train.head import HeadForward

        self.settings = settings
        self.iovqa_args = iovqa_args = settings.iovqa_args
        self.loaded = InferenceModel(settings.model, settings.adapter, settings.template, settings.model_keys, iovqa_args,
                                     device=settings.device)
        spec = FrameSpec(iovqa_args.num_frames, iovqa_args.frame_strategy, iovqa_args.frame_format)
        self.cache = FrameCache(iovqa_args.cache_dir, spec)
        self.grid = ScoreGrid.from_tokenizer(self.loaded.tokenizer) if iovqa_args.format.expected == "grid" else None
        self.levels = self.loaded.level_tokens() if iovqa_args.format.expected == "levels" else None
        self.head = HeadForward(self.loaded.model, self.loaded.tokenizer) if iovqa_args.head_on else None

    def prompts(self, prompt_text: str, media: str = VIDEO) -> list[tuple[Any, str]]:
        """(dimension, training prompt) of each sample of this text prompt (one, except per_sample dimensions)."""
        blank = {name: "" for name in self.iovqa_args.dimension_names}
        return [(dimension, prompt) for dimension, prompt, _ in
                dims.row_samples(cut_prompt(prompt_text, self.iovqa_args.max_prompt_chars), blank,
                                 self.iovqa_args, media)]

    def encode(self, prompt_text: str, frames: list[str], media: str = VIDEO) -> dict[str, Any]:
        """One sample's features: the training prompt for this text and these frames (``media`` "image": the
        image's cached copy), without the answer."""
        return self.loaded.encode(self.prompts(prompt_text, media)[0][1], frames, image=media == IMAGE)

    def encode_all(self, prompt_text: str, frames: list[str], media: str = VIDEO) -> list[dict[str, Any]]:
        """The features of every sample of a video or image (per_sample dimensions: one per dimension)."""
        return [self.loaded.encode(prompt, frames, image=media == IMAGE)
                for _, prompt in self.prompts(prompt_text, media)]

    def batch(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        return self.loaded.batch(features)

    def answer_limit(self) -> int:
        """The most tokens a generated answer may take."""
        iovqa_args = self.iovqa_args
        # a level word can take more tokens than a score ("ex" + "cellent", or one per letter)
        limit = max(decoding.MAX_NEW_TOKENS, self.levels.longest + 1) if self.levels else decoding.MAX_NEW_TOKENS
        if iovqa_args.rl_on and iovqa_args.grpo_mode == "thinking":  # reasoning first: as long as in its rollouts
            limit = max(limit, iovqa_args.grpo_max_completion_length)
        return limit

    def greedy(self, batch: dict[str, Any]) -> list[str]:
        """Temperature-0 answers (the paper's decoding)."""
        loaded = self.loaded
        return decoding.greedy(loaded.model, batch, loaded.tokenizer, loaded.stop_ids,
                               loaded.mm_token_type_ids(batch["input_ids"]), self.iovqa_args.label_format,
                               self.answer_limit(), loaded.thought_tags)

    def sampled(self, video: str, feature: dict[str, Any]) -> list[str]:
        """The sampled answers of one video (``settings.sampling``), seeded by the run's seed and the video's id."""
        loaded, sampling = self.loaded, self.settings.sampling
        batch = self.batch([feature] * sampling.samples)
        return decoding.sampled(loaded.model, batch, loaded.tokenizer, loaded.stop_ids,
                                loaded.mm_token_type_ids(batch["input_ids"]), sampling.temperature,
                                video_seed(sampling.seed, video), self.iovqa_args.label_format, self.answer_limit(),
                                loaded.thought_tags)

    def _read_samples(self, result: VideoResult, texts: list[str]) -> None:
        """The sampled answers' mean MOS and spread; the answers that gave none are counted, not averaged."""
        from statistics import fmean, pstdev

        tags = self.loaded.thought_tags
        scores = [read_answer(decoding.answer_text(text, tags), self.iovqa_args.label_format)[0] for text in texts]
        read = [score for score in scores if score is not None]
        result.sampled_parsed, result.sampled_unparseable = len(read), len(scores) - len(read)
        if read:
            result.sampled_mos, result.sampled_std = fmean(read), pstdev(read)
        else:
            result.error = f"none of the {len(texts)} sampled answers gave a MOS (e.g. {texts[0][:60]!r})"
        if result.reasoning is None:  # the first sample's that has one
            result.reasoning = next(filter(None, (decoding.reasoning_text(text, tags) for text in texts)), None)

    def distribution(self, batch: dict[str, Any]):
        """(p(n) over 10..50, probability mass on valid integers)."""
        if self.grid is None:
            raise ValueError("expected-score decoding needs integer or level labels (iovqa_label_format)")
        return decoding.distribution(self.loaded.model, batch, self.grid)

    def score_videos(self, videos: list[str], features: list[list[dict[str, Any]]], mode: str) -> list[VideoResult]:
        """Results of videos given the features of each one's samples (see :meth:`encode_all`)."""
        iovqa_args = self.iovqa_args
        if not iovqa_args.multi_dimension:
            return self.score_features(videos, [f[0] for f in features], mode)
        if iovqa_args.joint:
            return self._score_joint(videos, features, mode)
        names = iovqa_args.dimension_names
        flat = self.score_features([f"{v}#{n}" for v in videos for n in names], [x for f in features for x in f], mode)
        results = []
        for i, video in enumerate(videos):
            parts = dict(zip(names, flat[i * len(names):(i + 1) * len(names)]))
            result = VideoResult(video=video, mode=mode, dimensions=parts)
            texts = [f"{name}: {part.greedy_text}" for name, part in parts.items() if part.greedy_text is not None]
            result.greedy_text = "; ".join(texts) or None
            result.summarise_dimensions()
            results.append(result)
        return results

    def _score_joint(self, videos: list[str], features: list[list[dict[str, Any]]], mode: str) -> list[VideoResult]:
        """One answer per video in the joint wording, score by score: each dimension's score is decoded after
        the wording and the earlier scores as decoded (greedy's text; in expected mode, or where greedy gave no
        score, the rounded expected score). The wording is never trained (the digit mask keeps the scores
        only), so it is written for the model rather than generated."""
        names = self.iovqa_args.dimension_names
        parts: list[dict[str, VideoResult]] = [{} for _ in videos]
        earlier: list[list[str]] = [[] for _ in videos]
        for k, name in enumerate(names):
            prefixed = [self._with_answer_prefix(f[0], dims.joint_prefix(names, k, earlier[i]))
                        for i, f in enumerate(features)]
            for i, part in enumerate(self.score_features(videos, prefixed, mode)):
                parts[i][name] = part
                value = part.greedy_mos if part.greedy_mos is not None else part.expected_mos
                earlier[i].append(str(int(round(value * 10))) if value is not None else (part.greedy_text or "").strip())
        results = []
        for video, video_parts in zip(videos, parts):
            text = None
            if get_scoring_mode(mode).greedy:
                text = dims.joint_answer({n: (p.greedy_text or "").strip() for n, p in video_parts.items()}, names)
            result = VideoResult(video=video, mode=mode, greedy_text=text, dimensions=video_parts)
            result.summarise_dimensions()
            results.append(result)
        return results

    def _with_answer_prefix(self, feature: dict[str, Any], prefix: str) -> dict[str, Any]:
        """A sample's features followed by the start of its answer, tokenized as the training answer's text is
        (the template encodes the answer apart from the prompt)."""
        ids = self.loaded.tokenizer.encode(prefix, add_special_tokens=False)
        extended = dict(feature)
        for key, extra in (("input_ids", ids), ("attention_mask", [1] * len(ids)), ("labels", [IGNORE_INDEX] * len(ids))):
            extended[key] = list(feature[key]) + extra
        return extended

    def score_features(self, videos: list[str], features: list[dict[str, Any]], mode: str) -> list[VideoResult]:
        from ..data.grid import expected_mos

        batch = self.batch(features)
        decoders = get_scoring_mode(mode)
        if decoders.head:
            if self.head is None:
                raise ValueError("mode 'head' needs a model trained with iovqa_head: softmax_regression")
            mean, grades = decoding.head_scores(self.loaded.model, batch, self.head)
            return [VideoResult(video=v, mode=mode, head_mos=float(mean[i]), grades=grades[i].tolist())
                    for i, v in enumerate(videos)]
        results = [VideoResult(video=v, mode=mode) for v in videos]
        if decoders.greedy:
            for result, text in zip(results, self.greedy(batch)):
                result.greedy_text = text
                result.reasoning = decoding.reasoning_text(text, self.loaded.thought_tags)
                answer = decoding.answer_text(text, self.loaded.thought_tags)
                result.greedy_mos, reason = read_answer(answer, self.iovqa_args.label_format)
                if reason is not None:  # never a MOS: no number, or one off the label grid
                    result.greedy_error = reason
                    if decoders.greedy_error_fails:
                        result.error = f"greedy {reason}"
        if decoders.sampled:
            for result, video, feature in zip(results, videos, features):
                self._read_samples(result, self.sampled(video, feature))
        if decoders.expected and self.levels is not None:
            from ..data.levels import expected_level

            probabilities, mass = decoding.level_distribution(self.loaded.model, batch, self.levels)
            mean, std = expected_level(probabilities)
            for i, result in enumerate(results):
                result.expected_mos, result.expected_std = float(mean[i]), float(std[i])
                result.integer_mass, result.grades = float(mass[i]), probabilities[i].tolist()
        elif decoders.expected:
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
        check_mode(mode, self.iovqa_args)  # refused before any video is read
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        pending: list[tuple[str, list[dict]]] = []
        for video, path, prompt in rows:
            try:
                kind = media_kind(path)
                if prompt is None and not (kind == IMAGE and self.iovqa_args.image_prompt_free):
                    raise ValueError("no text prompt: only image rows under an iovqa_image_prompt_template without "
                                     "{prompt} go without")
                pending.append((video, self.encode_all(prompt, self.cache.get(path), kind)))
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
            yield from self.score_videos(videos, [f for _, f in pending], mode)
        except Exception as err:
            if len(pending) == 1:
                yield VideoResult(video=videos[0], mode=mode, error=f"{type(err).__name__}: {err}")
                return
            for item in pending:  # find the failing one(s): score one by one
                yield from self._score_pending([item], mode)

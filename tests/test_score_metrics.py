"""In-training evaluation metrics: no label leak, correct true MOS."""

import numpy as np
import pytest
import torch

from iovqa_plugin.data.grid import ScoreGrid
from iovqa_plugin.train import score_metrics
from iovqa_plugin.data.labels import IGNORE_INDEX


@pytest.fixture
def grid(qwen_tokenizer):
    return ScoreGrid.from_tokenizer(qwen_tokenizer)


def make_labels(tokenizer, scores, width=12, start=6):
    labels = torch.full((len(scores), width), IGNORE_INDEX)
    for row, score in enumerate(scores):
        ids = tokenizer.encode(str(score), add_special_tokens=False)
        labels[row, start : start + len(ids)] = torch.tensor(ids)
    return labels


def test_prediction_does_not_depend_on_the_label(qwen_tokenizer, grid):
    torch.manual_seed(0)
    logits = torch.randn(4, 12, 151665)
    a = score_metrics.score_logits(logits, make_labels(qwen_tokenizer, [10, 23, 37, 50]), grid)
    b = score_metrics.score_logits(logits, make_labels(qwen_tokenizer, [49, 31, 18, 26]), grid)
    assert torch.equal(a[:, 0], b[:, 0])  # the prediction is the same whatever the labels say
    assert torch.allclose(a[:, 1], torch.tensor([1.0, 2.3, 3.7, 5.0]))  # the true MOS is read from the labels
    assert torch.allclose(b[:, 1], torch.tensor([4.9, 3.1, 1.8, 2.6]))


def test_expected_grade_from_the_first_digit(qwen_tokenizer, grid):
    logits = torch.full((1, 12, 151665), -1e4)
    four = qwen_tokenizer.convert_tokens_to_ids("4")
    two = qwen_tokenizer.convert_tokens_to_ids("2")
    logits[0, 5, four] = 0.0  # position 5 predicts the first label token at 6
    logits[0, 5, two] = 0.0
    out = score_metrics.score_logits(logits, make_labels(qwen_tokenizer, [37]), grid)
    assert out[0, 0] == pytest.approx(3.0)  # P(2) = P(4) = 0.5


def test_compute_metrics_on_the_reduced_predictions():
    from transformers import EvalPrediction

    expected = np.array([1.5, 2.0, 3.2, 4.1, 4.4])
    mos = np.array([1.2, 2.5, 3.0, 3.9, 4.8])
    metrics = score_metrics.ComputeScoreMetrics()(EvalPrediction(np.stack([expected, mos], 1), None))
    assert metrics["srcc"] == pytest.approx(1.0) and set(metrics) == {"srcc", "plcc", "final"}

"""The fidelity ranking loss (DeQA-Score): values, gradients, edge cases, across ranks, and in a training run."""

import json
import math
import os

import numpy as np
import pytest
import torch

from conftest import base_recipe, train_in_process
from iovqa_plugin.config import PluginConfigError
from iovqa_plugin.config_parser import build_config
from iovqa_plugin.data.labels import IGNORE_INDEX
from iovqa_plugin.train.rank_loss import (EPS, RankSettings, fidelity_loss, integer_score_distributions, rank_loss,
                                          score_moments)

GRADES = torch.arange(1.0, 6.0)


def phi(x):
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def pair_term(p_hat, p):
    return 1 - math.sqrt(p_hat * p + EPS) - math.sqrt((1 - p_hat) * (1 - p) + EPS)


def test_loss_equals_a_hand_computation():
    probabilities = torch.tensor([[0, 0, 0.5, 0.5, 0], [0, 0.5, 0.5, 0, 0], [0, 0, 1.0, 0, 0]])
    scores, variances = score_moments(probabilities, GRADES)
    assert scores.tolist() == pytest.approx([3.5, 2.5, 3.0])
    assert variances.tolist() == pytest.approx([0.25, 0.25, 0.0])
    mos = torch.tensor([3.7, 2.1, 3.0])
    # pairs (0,1), (0,2), (1,2): targets 1, 1, 0 (larger MOS first)
    expected = np.mean([pair_term(phi(1.0 / math.sqrt(0.5 + EPS)), 1), pair_term(phi(0.5 / math.sqrt(0.25 + EPS)), 1),
                        pair_term(phi(-0.5 / math.sqrt(0.25 + EPS)), 0)])
    loss = fidelity_loss(scores, variances, mos)
    assert float(loss) == pytest.approx(expected, abs=1e-6)
    assert float(loss) == pytest.approx((0.04003 + 0.08265 + 0.08265) / 3, abs=1e-4)  # worked on paper
    # with the raters' stds the target is Phi of the MOS difference; a fixed sigma replaces the variances
    stds = torch.tensor([0.3, 0.4, 0.5])
    with_stds = np.mean([pair_term(phi(1.0 / math.sqrt(0.5 + EPS)), phi(1.6 / math.sqrt(0.25 + EPS))),
                         pair_term(phi(0.5 / math.sqrt(0.25 + EPS)), phi(0.7 / math.sqrt(0.34 + EPS))),
                         pair_term(phi(-0.5 / math.sqrt(0.25 + EPS)), phi(-0.9 / math.sqrt(0.41 + EPS)))])
    assert float(fidelity_loss(scores, variances, mos, stds)) == pytest.approx(with_stds, abs=1e-6)
    fixed = np.mean([pair_term(phi(d / math.sqrt(2)), p) for d, p in ((1.0, 1), (0.5, 1), (-0.5, 0))])
    assert float(fidelity_loss(scores, variances, mos, sigma=1.0)) == pytest.approx(fixed, abs=1e-6)
    # equal MOS: target 0.5; groups keep rows of different dimensions apart
    tie = pair_term(phi(1.0 / math.sqrt(0.5 + EPS)), 0.5)
    assert float(fidelity_loss(scores[:2], variances[:2], torch.tensor([3.0, 3.0]))) == pytest.approx(tie, abs=1e-6)
    grouped = fidelity_loss(scores, variances, mos, groups=torch.tensor([0, 1, 0]))
    assert float(grouped) == pytest.approx(pair_term(phi(0.5 / math.sqrt(0.25 + EPS)), 1), abs=1e-6)


def test_finite_with_identical_scores_and_zero_variance():
    logits = torch.full((4, 5), -30.0)
    logits[:, 2] = 30.0  # every row certain of the same grade: equal scores, variance ~0
    logits.requires_grad_(True)
    scores, variances = score_moments(torch.softmax(logits, -1), GRADES)
    for mos in (torch.tensor([3.0, 3.0, 3.0, 3.0]), torch.tensor([1.0, 2.0, 3.0, 4.0])):
        loss = fidelity_loss(scores, variances, mos)
        (grad,) = torch.autograd.grad(loss, logits, retain_graph=True)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
    identical = torch.full((3,), 3.0, requires_grad=True)
    loss = fidelity_loss(identical, torch.zeros(3), torch.tensor([3.0, 3.0, 3.0]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(identical.grad).all()


def _reference(logits, mos, stds, sigma):
    """The loss written out pair by pair in float64, for autograd."""
    probabilities = torch.softmax(logits, -1)
    means = [(probabilities[r] * GRADES.double()).sum() for r in range(len(mos))]
    variances = [(probabilities[r] * (GRADES.double() - means[r]) ** 2).sum() for r in range(len(mos))]
    terms = []
    for i in range(len(mos)):
        for j in range(i + 1, len(mos)):
            spread = torch.sqrt(variances[i] + variances[j] + EPS) if sigma is None else math.sqrt(2) * sigma
            p_hat = 0.5 * (1 + torch.erf((means[i] - means[j]) / spread / math.sqrt(2)))
            p = phi((mos[i] - mos[j]) / math.sqrt(stds[i] ** 2 + stds[j] ** 2 + EPS))
            terms.append(1 - torch.sqrt(p_hat * p + EPS) - torch.sqrt((1 - p_hat) * (1 - p) + EPS))
    return torch.stack(terms).mean()


@pytest.mark.parametrize("sigma", [None, 1.0])
def test_gradient_matches_autograd_on_the_reference(sigma):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 5, generator=generator, dtype=torch.float64)
    mos, stds = [3.2, 1.4, 4.8, 2.9, 3.3], [0.5, 0.7, 0.4, 0.6, 0.3]
    ours_input = logits.clone().requires_grad_(True)
    scores, variances = score_moments(torch.softmax(ours_input, -1), GRADES.double())
    ours = fidelity_loss(scores, variances, torch.tensor(mos, dtype=torch.float64),
                         torch.tensor(stds, dtype=torch.float64), sigma=sigma)
    (ours_grad,) = torch.autograd.grad(ours, ours_input)
    reference_input = logits.clone().requires_grad_(True)
    reference = _reference(reference_input, mos, stds, sigma)
    (reference_grad,) = torch.autograd.grad(reference, reference_input)
    assert float(ours.detach()) == pytest.approx(float(reference.detach()), abs=1e-12)
    assert torch.allclose(ours_grad, reference_grad, atol=1e-12)
    # and autograd against finite differences
    assert torch.autograd.gradcheck(
        lambda x: fidelity_loss(*score_moments(torch.softmax(x, -1), GRADES.double()),
                                torch.tensor(mos, dtype=torch.float64), sigma=sigma), (logits.clone().requires_grad_(True),))


def test_one_sample_batch_gives_zero_not_nan():
    logits = torch.randn(1, 5, requires_grad=True)
    scores, variances = score_moments(torch.softmax(logits, -1), GRADES)
    loss = fidelity_loss(scores, variances, torch.tensor([3.0]))
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))
    # rows of different dimensions only: no pair either
    two = fidelity_loss(scores.repeat(2), variances.repeat(2), torch.tensor([3.0, 4.0]), groups=torch.tensor([0, 1]))
    assert float(two.detach()) == 0.0


def test_integer_score_distributions_read_the_first_digit_and_the_true_mos():
    class Grid:  # two-step grid with made-up ids: "1".."5" = 11..15, "0".."9" = 20..29
        steps, first_ids, second_ids = 2, torch.arange(11, 16), torch.arange(20, 30)

    vocabulary = 32
    logits = torch.randn(2, 4, vocabulary)
    # row 0 answers "37" at kept positions 0, 1; row 1 answers "42" at kept positions 1, 2
    targets = torch.tensor([[13, 27, IGNORE_INDEX, IGNORE_INDEX], [IGNORE_INDEX, 14, 22, IGNORE_INDEX]])
    probabilities, values, mos = integer_score_distributions(logits, targets, Grid(), scores=1)
    assert values.tolist() == [1, 2, 3, 4, 5]
    assert mos.flatten().tolist() == pytest.approx([3.7, 4.2])
    assert torch.allclose(probabilities[0, 0], torch.softmax(logits[0, 0, 11:16], -1))
    assert torch.allclose(probabilities[1, 0], torch.softmax(logits[1, 1, 11:16], -1))
    # joint answers: the k-th score starts at the row's labelled target number 2k
    joint = torch.tensor([[13, 27, 12, 20], [14, 22, 15, 20]])
    probabilities, _, mos = integer_score_distributions(logits, joint, Grid(), scores=2)
    assert mos.flatten().tolist() == pytest.approx([3.7, 2.0, 4.2, 5.0])
    assert torch.allclose(probabilities[1, 1], torch.softmax(logits[1, 2, 11:16], -1))
    with pytest.raises(ValueError, match=r"row\(s\) \[1\]"):
        integer_score_distributions(logits, targets[:, :1].expand(2, 1).clone(), Grid(), scores=1)


def _gather_worker(rank, world, init_file, results):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    logits = torch.randn(5, 5, dtype=torch.float64)
    mos = torch.tensor([3.2, 1.4, 4.8, 2.9, 3.3], dtype=torch.float64)
    rows = [[0, 1, 2], [3, 4]][rank]  # micro-batches of different sizes
    local = logits[rows].clone().requires_grad_(True)
    scores, variances = score_moments(torch.softmax(local, -1), GRADES.double())
    loss = rank_loss(scores, variances, mos[rows], None, torch.zeros(len(rows)), RankSettings(gather=True))
    (grad,) = torch.autograd.grad(loss, local)
    results[rank] = (float(loss.detach()), grad.tolist())
    dist.destroy_process_group()


@pytest.mark.slow
def test_gathered_pairs_across_ranks_give_the_global_loss_and_gradient(tmp_path):
    import torch.multiprocessing as mp

    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_gather_worker, args=(2, str(tmp_path / "init"), results), nprocs=2, join=True)
    torch.manual_seed(0)
    logits = torch.randn(5, 5, dtype=torch.float64).requires_grad_(True)
    mos = torch.tensor([3.2, 1.4, 4.8, 2.9, 3.3], dtype=torch.float64)
    scores, variances = score_moments(torch.softmax(logits, -1), GRADES.double())
    full = fidelity_loss(scores, variances, mos)
    (full_grad,) = torch.autograd.grad(full, logits)
    for rank in (0, 1):  # each rank: the loss over all 10 pairs x 2 (DDP averages the two ranks' gradients)
        assert results[rank][0] == pytest.approx(2 * float(full.detach()), abs=1e-12)
    # each rank's gradient reaches its own rows; DDP's mean of the ranks' parameter gradients is then the
    # gradient of the global loss
    stacked = torch.tensor(results[0][1] + results[1][1], dtype=torch.float64) / 2
    assert torch.allclose(stacked, full_grad, atol=1e-12)


def test_recipe_keys_are_checked():
    run = build_config({"iovqa_rank_loss": "fidelity", "iovqa_rank_weight": 0.5, "iovqa_rank_sigma": 1})
    settings = RankSettings.of_run(run)
    assert settings == RankSettings(weight=0.5, sigma=1.0, use_stds=False, gather=False)
    assert RankSettings.of_run(build_config({})) is None
    level = build_config({"iovqa_rank_loss": "fidelity", "iovqa_label_format": "level", "iovqa_level_targets": "soft",
                          "iovqa_std_column": "MOS_std"})
    assert RankSettings.of_run(level).use_stds
    joint = build_config({"iovqa_rank_loss": "fidelity", "iovqa_dimensions": "temporal,overall",
                          "iovqa_dimension_layout": "joint"})
    assert joint.rank_on
    bad = [
        ({"iovqa_rank_loss": "listnet"}, "iovqa_rank_loss must be one of"),
        ({"iovqa_rank_loss": "fidelity", "iovqa_rank_weight": -1}, "iovqa_rank_weight must be a number >= 0"),
        ({"iovqa_rank_loss": "fidelity", "iovqa_rank_sigma": 0}, "iovqa_rank_sigma must be > 0"),
        ({"iovqa_rank_sigma": 1.0}, "read for iovqa_rank_loss: fidelity only"),
        ({"iovqa_rank_loss": "fidelity", "iovqa_head": "softmax_regression"}, "no iovqa_head"),
        ({"iovqa_rank_loss": "fidelity", "iovqa_labelled_logits": False}, "iovqa_labelled_logits: true"),
        ({"iovqa_rank_loss": "fidelity", "iovqa_label_format": "decimal"}, "integer"),
        ({"iovqa_rank_loss": "fidelity", "iovqa_dimensions": "temporal,overall"}, "joint"),
    ]
    for keys, message in bad:
        with pytest.raises(PluginConfigError, match=message):
            build_config(keys)


# --- in a training run ----------------------------------------------------------------------------------------

def _log(out):
    """The Trainer's log history (LLaMA-Factory's trainer_log.jsonl keeps its own keys only)."""
    with open(os.path.join(out, "trainer_state.json"), encoding="utf-8") as handle:
        return json.load(handle)["log_history"]


@pytest.mark.slow
def test_weight_zero_trains_exactly_as_without_the_loss(tiny_model, demo_dir, tmp_path):
    logs = {}
    for name, keys in (("off", {}), ("zero", {"iovqa_rank_loss": "fidelity", "iovqa_rank_weight": 0.0}),
                       ("on", {"iovqa_rank_loss": "fidelity", "iovqa_rank_weight": 50.0})):
        out = str(tmp_path / name)
        recipe = base_recipe(tiny_model, demo_dir, out, max_steps=2, save_steps=2, per_device_train_batch_size=4,
                             logging_steps=1, **keys)
        log = train_in_process(recipe)
        assert ("fidelity ranking loss" in log) == (name != "off")
        logs[name] = [entry for entry in _log(out) if "loss" in entry]
    assert len(logs["off"]) == 2
    assert [e["loss"] for e in logs["zero"]] == [e["loss"] for e in logs["off"]]  # step 2 follows step 1's update
    assert all(math.isfinite(e["rank_loss"]) and 0 <= e["rank_loss"] < 1 for e in logs["zero"] + logs["on"])
    assert "rank_loss" not in logs["off"][0]
    # weighted in: step 1's loss is the SFT loss plus 50 x the same rank term
    first_on, first_zero = logs["on"][0], logs["zero"][0]
    assert first_on["rank_loss"] == pytest.approx(first_zero["rank_loss"], rel=1e-4)
    assert first_on["loss"] == pytest.approx(first_zero["loss"] + 50 * first_zero["rank_loss"], rel=1e-3)


@pytest.mark.slow
def test_level_run_with_rater_stds_trains_the_rank_loss(level_run):
    """conftest's level run: level words, soft targets from a rater std column, fidelity loss gathered across ranks."""
    _, out, _, log = level_run
    assert "fidelity ranking loss, weight 20.0, predicted variances, pairs across ranks" in log
    steps = [entry for entry in _log(out) if "loss" in entry]
    assert len(steps) == 2 and all(math.isfinite(e["rank_loss"]) and 0 < e["rank_loss"] < 1 for e in steps)

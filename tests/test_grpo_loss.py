"""The GRPO loss against a hand computation (each loss type) and autograd on a plain per-token reference."""

import math

import pytest
import torch

from iovqa_plugin.rl.loss import group_advantages, grpo_loss

LOGPS = [[-1.0, -2.0], [-0.5, -3.0]]
OLD = [[-1.2, -2.0], [-0.5, -2.5]]
REF = [[-1.1, -2.0], [-0.4, -3.0]]
MASK = [[1, 1], [1, 0]]
ADV = [1.0, -2.0]


def hand_per_token(beta):
    """Per-token losses of the three unmasked tokens, written out."""
    r00 = math.exp(-1.0 + 1.2)  # 1.2214 > 1.2, A = 1 > 0: the clipped value 1.2 is the min
    t00 = -min(r00 * 1.0, 1.2 * 1.0)
    t01 = -1.0  # ratio 1
    t10 = 2.0  # ratio 1, A = -2
    kl00 = math.exp(-0.1) + 0.1 - 1  # k3 with log ref - log pi = -0.1
    kl10 = math.exp(0.1) - 0.1 - 1
    return t00 + beta * kl00, t01, t10 + beta * kl10


def tensors():
    return (torch.tensor(LOGPS, requires_grad=True), torch.tensor(ADV), torch.tensor(MASK), torch.tensor(OLD),
            torch.tensor(REF))


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_loss_types_equal_the_hand_computation(loss_type):
    a, b, c = hand_per_token(0.1)
    expected = {"grpo": ((a + b) / 2 + c) / 2, "bnpo": (a + b + c) / 3, "dr_grpo": (a + b + c) / (2 * 4),
                "dapo": (a + b + c) / 10}[loss_type]
    logps, adv, mask, old, ref = tensors()
    loss, stats = grpo_loss(logps, adv, mask, old, ref, beta=0.1, epsilon_low=0.2, loss_type=loss_type,
                            max_completion_length=4, normalizer=10)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)
    assert stats.clip_ratio == pytest.approx(1 / 3)
    assert stats.kl == pytest.approx((math.exp(-0.1) + 0.1 - 1 + math.exp(0.1) - 0.1 - 1) / 3, rel=1e-5)


def naive(logps, adv, mask, old, ref, beta, eps):
    """Token by token, as the GRPO paper writes it (the grpo loss type)."""
    rows = []
    for i in range(logps.shape[0]):
        terms = []
        for t in range(logps.shape[1]):
            if not mask[i, t]:
                continue
            ratio = torch.exp(logps[i, t] - old[i, t])
            surrogate = torch.minimum(ratio * adv[i], torch.clamp(ratio, 1 - eps, 1 + eps) * adv[i])
            kl = torch.exp(ref[i, t] - logps[i, t]) - (ref[i, t] - logps[i, t]) - 1
            terms.append(-(surrogate - beta * kl))
        rows.append(torch.stack(terms).mean())
    return torch.stack(rows).mean()


def test_gradients_match_autograd_on_the_reference():
    torch.manual_seed(0)
    logps = (torch.randn(6, 5) * 0.3 - 1).requires_grad_(True)
    old = (logps.detach() + torch.randn(6, 5) * 0.3)
    ref = logps.detach() + torch.randn(6, 5) * 0.2
    mask = (torch.rand(6, 5) > 0.3).long()
    mask[:, 0] = 1
    adv = torch.randn(6)
    loss, _ = grpo_loss(logps, adv, mask, old, ref, beta=0.04, epsilon_low=0.2, loss_type="grpo")
    (grad,) = torch.autograd.grad(loss, logps)
    reference = logps.detach().clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(naive(reference, adv, mask, old, ref, 0.04, 0.2), reference)
    assert torch.allclose(grad, expected, atol=1e-6) and grad[mask == 0].abs().max() == 0
    # on-policy (old = None, one update per generation batch): the ratio is 1, the gradient is -A / |o| per token
    loss, _ = grpo_loss(logps, adv, mask, loss_type="grpo")
    (grad,) = torch.autograd.grad(loss, logps)
    per_row = -adv.unsqueeze(1) / mask.sum(1, keepdim=True) / logps.shape[0]
    assert torch.allclose(grad, per_row * mask, atol=1e-6)


def test_advantages_with_and_without_std_scaling():
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5])
    adv, std = group_advantages(rewards, 2, "group")
    s = math.sqrt(0.5)  # unbiased std of (1, 0)
    assert adv.tolist() == pytest.approx([0.5 / (s + 1e-4), -0.5 / (s + 1e-4), 0.0, 0.0])
    assert std.tolist() == pytest.approx([s, s, 0.0, 0.0])
    assert group_advantages(rewards, 2, "none")[0].tolist() == pytest.approx([0.5, -0.5, 0.0, 0.0])
    batch_std = float(rewards.std())
    assert group_advantages(rewards, 2, "batch")[0].tolist() == pytest.approx(
        [0.5 / (batch_std + 1e-4), -0.5 / (batch_std + 1e-4), 0.0, 0.0])
    with pytest.raises(ValueError, match="groups of 3"):
        group_advantages(rewards, 3)


def test_beta_zero_needs_no_reference():
    logps, adv, mask, old, _ = tensors()
    loss, stats = grpo_loss(logps, adv, mask, old, None, beta=0.0)
    assert stats.kl is None and torch.isfinite(loss)
    with pytest.raises(ValueError, match="reference"):
        grpo_loss(logps, adv, mask, old, None, beta=0.1)

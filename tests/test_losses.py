"""Stage 4 losses against values computed by hand."""

import math

import pytest
import torch

from ospo.losses import copo_loss, dpo_loss, sequence_logp, sft_loss, simpo_loss


def logsig(x):
    return -math.log1p(math.exp(-x))


def test_sequence_logp_plain_weighted_and_masked():
    lp = torch.tensor([[-1.0, -2.0, -3.0, -6.0]])
    assert sequence_logp(lp).item() == pytest.approx(-3.0)
    w = torch.tensor([[1.0, 1.0, 2.0, 0.0]])  # (-1 - 2 - 6 + 0) / 4
    assert sequence_logp(lp, w).item() == pytest.approx(-9 / 4)
    m = torch.tensor([[1, 0, 1, 0]])
    assert sequence_logp(lp, mask=m).item() == pytest.approx(-2.0)
    assert sequence_logp(lp, w, m).item() == pytest.approx((-1 - 6) / 3)


def test_simpo_sigmoid_with_gamma_ratio_and_rewards():
    lw, ll = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])
    out = simpo_loss(lw, ll, beta=3.0, gamma_ratio=0.5)
    # z = 3 * (lw - ll) - 1.5
    for i, z in enumerate([3 * 0.5 - 1.5, 3 * -1.0 - 1.5]):
        assert out.losses[i].item() == pytest.approx(-logsig(z), rel=1e-6)
    assert out.chosen_rewards.tolist() == pytest.approx([-3.0, -6.0])
    assert out.rejected_rewards.tolist() == pytest.approx([-4.5, -3.0])
    assert not out.chosen_rewards.requires_grad


def test_simpo_label_smoothing_and_hinge():
    lw, ll = torch.tensor([-1.0]), torch.tensor([-2.0])
    z = 2.0 * 1.0 - 2.0 * 0.25  # beta 2, gamma 0.5
    smooth = simpo_loss(lw, ll, 2.0, 0.25, label_smoothing=0.1).losses.item()
    assert smooth == pytest.approx(-0.9 * logsig(z) - 0.1 * logsig(-z), rel=1e-6)
    assert simpo_loss(lw, ll, 2.0, 0.25, "hinge").losses.item() == pytest.approx(max(0, 1 - z))
    assert simpo_loss(lw, ll, 0.1, 0.0, "hinge").losses.item() == pytest.approx(0.9)
    with pytest.raises(ValueError, match="loss_type"):
        simpo_loss(lw, ll, 1.0, 0.0, "ipo")


def test_copo_is_the_same_form_on_true_vs_negative_prompt():
    pos, neg = torch.tensor([-1.0]), torch.tensor([-1.2])
    assert copo_loss(pos, neg, 5.0, 0.5).losses.item() == pytest.approx(-logsig(5 * 0.2 - 2.5), rel=1e-6)


def test_sft_is_the_negative_mean_log_likelihood():
    assert sft_loss(torch.tensor([-2.5, -0.5])).tolist() == [2.5, 0.5]


def test_dpo_against_hand_values():
    out = dpo_loss(torch.tensor([-10.0]), torch.tensor([-12.0]), torch.tensor([-11.0]), torch.tensor([-11.0]), 0.1)
    # (pi_w - ref_w) - (pi_l - ref_l) = 1 - (-1) = 2
    assert out.losses.item() == pytest.approx(-logsig(0.2), rel=1e-6)
    assert out.chosen_rewards.item() == pytest.approx(0.1)
    assert out.rejected_rewards.item() == pytest.approx(-0.1)


def test_gradients_of_simpo_push_chosen_up_and_rejected_down():
    lw, ll = torch.tensor([-1.0], requires_grad=True), torch.tensor([-1.0], requires_grad=True)
    simpo_loss(lw, ll, 2.0, 0.5).losses.sum().backward()
    assert lw.grad.item() < 0 < ll.grad.item()  # descending the loss raises l_w and lowers l_l


def test_objective_is_the_weighted_sum_of_the_losses_by_hand():
    """Two pairs, l_w = -1, l_l = -2; pair 0 has a negative prompt with l(y_w|x~) = -3. SimPO (beta 2, gamma 1):
    z = 2 * 1 - 1 = 1; CoPO (beta 1, gamma 0.5): z = 2 - 0.5 = 1.5, pair 0 only; SFT = 1."""
    from ospo.config import TrainConfig
    from ospo.training.objective import objective

    cfg = TrainConfig(simpo_weight=1.0, simpo_beta=2.0, gamma_ratio=0.5, copo_weight=1.0, copo_beta=1.0,
                      sft_weight=1.0)
    logps = {"chosen": torch.full((2, 4), -1.0), "rejected": torch.full((2, 4), -2.0),
             "negative": torch.full((1, 4), -3.0)}
    total, metrics = objective(cfg, logps, {"has_negative": torch.tensor([True, False])})
    expected = [-logsig(1.0) - logsig(1.5) + 1.0, -logsig(1.0) + 1.0]
    assert torch.allclose(total, torch.tensor(expected), atol=1e-6)
    assert metrics["rewards/margins"].tolist() == [2.0, 2.0] and metrics["rewards/accuracies"].tolist() == [1.0, 1.0]
    assert metrics["loss/copo"].shape == (1,) and "loss/dpo" not in metrics

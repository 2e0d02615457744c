"""Stage 4 losses as pure functions of per-token log-probabilities (no model in here).

Every preference loss returns per-example losses `(B,)` plus the implicit rewards TRL logs, so the training loop
only averages and logs. Notation as in docs/method.md: `l(y|x)` is the length-averaged log-likelihood of the image
tokens `y` given prompt `x`; `beta` and `gamma` the SimPO scale and margin, `gamma = gamma_ratio * beta`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

LOSS_TYPES = ("sigmoid", "hinge")


class Preference(NamedTuple):
    losses: torch.Tensor  # (B,)
    chosen_rewards: torch.Tensor  # (B,) detached
    rejected_rewards: torch.Tensor  # (B,) detached


def sequence_logp(token_logps: torch.Tensor, weights: torch.Tensor | None = None,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """l_w(y|x) = sum_t w_t m_t log p(y_t | x, y_<t) / sum_t w_t m_t over (B, N) token log-probs.

    `weights` (default 1) are per-token weights (v3: 1 + alpha * object mask); `mask` (default 1) drops tokens.
    With neither, this is the plain length average l(y|x)."""
    w = torch.ones_like(token_logps) if weights is None else weights.to(token_logps)
    if mask is not None:
        w = w * mask.to(token_logps)
    return (w * token_logps).sum(-1) / w.sum(-1).clamp_min(1e-8)


def _pairwise(logits: torch.Tensor, loss_type: str, label_smoothing: float) -> torch.Tensor:
    """sigmoid: -(1-eps) log sigma(z) - eps log sigma(-z);  hinge: max(0, 1 - z)."""
    if loss_type == "sigmoid":
        return -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    if loss_type == "hinge":
        return torch.relu(1 - logits)
    raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}, got {loss_type!r}")


def simpo_loss(chosen: torch.Tensor, rejected: torch.Tensor, beta: float, gamma_ratio: float,
               loss_type: str = "sigmoid", label_smoothing: float = 0.0) -> Preference:
    """SimPO: L = -log sigma(beta * (l_w - l_l) - gamma), gamma = gamma_ratio * beta (TRL's `simpo_gamma / beta`).

    `chosen`, `rejected` are (possibly weighted) length-averaged log-likelihoods l(y_w|x), l(y_l|x). Hinge:
    max(0, 1 - (beta * (l_w - l_l) - gamma)). Rewards are beta * l."""
    logits = beta * (chosen - rejected) - gamma_ratio * beta
    return Preference(_pairwise(logits, loss_type, label_smoothing), (beta * chosen).detach(),
                      (beta * rejected).detach())


def copo_loss(chosen_given_prompt: torch.Tensor, chosen_given_negative: torch.Tensor, beta: float,
              gamma_ratio: float, loss_type: str = "sigmoid", label_smoothing: float = 0.0) -> Preference:
    """Conditional preference (CoPO): L = -log sigma(beta * (l(y_w|x) - l(y_w|x~)) - gamma).

    Same image, true prompt vs hard-negative prompt: the generator must condition on the edited words."""
    return simpo_loss(chosen_given_prompt, chosen_given_negative, beta, gamma_ratio, loss_type, label_smoothing)


def sft_loss(chosen: torch.Tensor) -> torch.Tensor:
    """L_SFT = -l(y_w|x): token-mean cross-entropy of the chosen image, (B,)."""
    return -chosen


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, reference_chosen: torch.Tensor,
             reference_rejected: torch.Tensor, beta: float, loss_type: str = "sigmoid",
             label_smoothing: float = 0.0) -> Preference:
    """DPO: L = -log sigma(beta * ((pi_w - ref_w) - (pi_l - ref_l))) on *summed* image-token log-likelihoods.

    The reference is the model before training (LoRA adapter disabled, or log-probs stored once with the pairs).
    Hinge: max(0, 1 - beta * (...)). Rewards are beta * (pi - ref)."""
    chosen_ratio, rejected_ratio = policy_chosen - reference_chosen, policy_rejected - reference_rejected
    logits = beta * (chosen_ratio - rejected_ratio)
    return Preference(_pairwise(logits, loss_type, label_smoothing), (beta * chosen_ratio).detach(),
                      (beta * rejected_ratio).detach())

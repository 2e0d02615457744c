"""The training objective: the recipe's weighted sum of the pure losses of `ospo.losses` over one micro-batch.

    total = simpo_weight * SimPO(l_w, l_l) + dpo_weight * DPO(sum_w, sum_l; reference)
          + copo_weight * CoPO(l(y_w|x), l(y_w|x~)) + sft_weight * SFT(l_w)

with l the (v3: object-weighted) token mean of the image tokens' log-probs. The rewards logged are those of the
first preference loss in that order (SimPO, else DPO), or the plain likelihoods when only SFT trains.
"""

from __future__ import annotations

import torch

from ospo.config import TrainConfig
from ospo.losses import Preference, copo_loss, dpo_loss, sequence_logp, sft_loss, simpo_loss


def objective(cfg: TrainConfig, logps: dict, batch: dict) -> tuple[torch.Tensor, dict]:
    """Per-pair total loss (B,) from per-token log-probs and the metrics (per-pair tensors) to log.

    logps: 'chosen', 'rejected' (B, N), 'negative' (B_neg, N) = l(y_w | x~) rows of the pairs with a negative
    prompt (batch['has_negative'] marks them)."""
    lw_tok, ll_tok = logps["chosen"], logps["rejected"]
    lw, ll = sequence_logp(lw_tok), sequence_logp(ll_tok)  # plain token means
    total = torch.zeros_like(lw)
    metrics = {"logps/chosen": lw.detach(), "logps/rejected": ll.detach()}
    primary: Preference | None = None
    if cfg.simpo_weight:
        if cfg.object_weighting:
            wlw = sequence_logp(lw_tok, batch["chosen_weights"])
            wll = sequence_logp(ll_tok, batch["rejected_weights"])
        else:
            wlw, wll = lw, ll
        primary = simpo_loss(wlw, wll, cfg.simpo_beta, cfg.gamma_ratio, cfg.loss_type, cfg.label_smoothing)
        total = total + cfg.simpo_weight * primary.losses
        metrics["loss/simpo"] = primary.losses.detach()
    if cfg.dpo_weight:
        pref = dpo_loss(lw_tok.sum(-1), ll_tok.sum(-1), batch["reference_chosen"], batch["reference_rejected"],
                        cfg.dpo_beta, cfg.loss_type, cfg.label_smoothing)
        total = total + cfg.dpo_weight * pref.losses
        metrics["loss/dpo"] = pref.losses.detach()
        primary = primary or pref
    if cfg.copo_weight and logps.get("negative") is not None and len(logps["negative"]):
        has = batch["has_negative"]
        pref = copo_loss(lw[has], sequence_logp(logps["negative"]), cfg.copo_beta, cfg.gamma_ratio, cfg.loss_type,
                         cfg.label_smoothing)
        copo = torch.zeros_like(lw).masked_scatter(has, pref.losses)
        total = total + cfg.copo_weight * copo
        metrics["loss/copo"] = pref.losses.detach()
        metrics["rewards/copo_margins"] = (pref.chosen_rewards - pref.rejected_rewards)
        metrics["logps/chosen_negative_prompt"] = sequence_logp(logps["negative"]).detach()
    if cfg.sft_weight:
        sft = sft_loss(lw)
        total = total + cfg.sft_weight * sft
        metrics["nll_loss"] = sft.detach()  # TRL's name for the chosen images' negative log-likelihood
    if primary is None:  # SFT only: log the plain likelihoods as rewards
        primary = Preference(torch.zeros_like(lw), lw.detach(), ll.detach())
    metrics["rewards/chosen"] = primary.chosen_rewards
    metrics["rewards/rejected"] = primary.rejected_rewards
    metrics["rewards/margins"] = primary.chosen_rewards - primary.rejected_rewards
    metrics["rewards/accuracies"] = (primary.chosen_rewards > primary.rejected_rewards).float()
    return total, metrics

"""The training data as one typed record, and the error that stops training."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ospo.errors import OspoError


class TrainingError(OspoError):
    """Training cannot go on (non-finite loss, batch sizes that do not divide, no pairs)."""


@dataclass
class PairData:
    """The training pairs as tensors; row i of every field belongs to pair `ids[i]`."""

    ids: list[str]
    prompts: list[str]
    negative_prompts: list[str | None]
    chosen: torch.Tensor  # (n, N) long: the sampled code ids of y_w
    rejected: torch.Tensor  # (n, N) long
    object_words: list[list[str]] | None = None
    chosen_weights: torch.Tensor | None = None  # (n, N) v3 token weights
    rejected_weights: torch.Tensor | None = None
    reference_chosen: torch.Tensor | None = None  # (n,) summed log-likelihoods under the initial model (DPO)
    reference_rejected: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.ids)

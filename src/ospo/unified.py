"""The contract between ospo and a unified understanding + generation model, and the records it returns.

The loop, training and evaluation talk to the model only through `UnifiedModel`; `ospo.model.JanusAdapter` is
its implementation for transformers' Janus. A second architecture plugs in by implementing this protocol (one
adapter module), with nothing else in ospo changing. The methods are named in the pipeline's vocabulary and take
plain prompts, seeds, codes and images; tensors are batched, shapes are in the docstrings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import torch

from ospo.sampling import ImageSampling, TextSampling


@dataclass(frozen=True)
class ImageTokens:
    """Sampled image codes and the conditional log-probability of each. codes: (B, N) int64; logps: (B, N) float32."""

    codes: torch.Tensor
    logps: torch.Tensor


@dataclass(frozen=True)
class YesNo:
    """p(yes), p(no) for each question of one image: two (Q,) float32 tensors. score = p_yes - p_no."""

    p_yes: torch.Tensor
    p_no: torch.Tensor

    @property
    def score(self) -> torch.Tensor:
        return self.p_yes - self.p_no


class UnifiedModel(Protocol):
    """What the OSPO loop, training and evaluation need of a unified understanding + generation model."""

    num_image_tokens: int
    image_size: int
    batch_size: int  # items per forward pass
    model: torch.nn.Module  # the trained network (training wraps it with LoRA in place)
    tokenizer: object  # the checkpoint's tokenizer and processor (chat template, image preprocessing)
    processor: object
    codebook_size: int  # image codes lie in [0, codebook_size)

    @property
    def device(self) -> torch.device: ...

    @property
    def context_length(self) -> int: ...  # tokens the language model attends over

    @property
    def default_cfg_scale(self) -> float: ...  # the guidance the checkpoint samples at unless told otherwise

    @property
    def lora_target_modules(self) -> str: ...  # regex over module names: the language model's linear layers

    def is_language_model_parameter(self, name: str) -> bool: ...  # full fine-tuning trains these alone

    def enable_gradient_checkpointing(self) -> None: ...

    def save_pretrained(self, out_dir: str | Path) -> None: ...  # as it is: a LoRA model saves its adapter

    def save_full_model(self, out_dir: str | Path) -> None: ...  # the whole model below any LoRA wrapper

    # (ids, mask) (B, P) of text-to-image prompts ready for teacher forcing; branch "uncond": the CFG null rows
    def image_prompt_ids(self, prompts: Sequence[str], branch: str = "cond"
                         ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def uncond_ids(self, ids: torch.Tensor) -> torch.Tensor: ...  # the unconditional rows of prompt ids

    # (B, N, V) generation-head logits of codes[:, t] given prompt + codes[:, :t], and the LM output (pretraining)
    def image_token_logits(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, codes: torch.Tensor,
                           **lm_kwargs): ...

    # per-token log p(codes | prompt rows) (B, N), differentiable, under guidance cfg_scale (training's forward)
    def teacher_forced_logps(self, ids: torch.Tensor, mask: torch.Tensor, codes: torch.Tensor,
                             cfg_scale: float = 1.0, with_uncond: bool = False, uncond_grad: bool = True): ...

    def generate_text(self, prompts: Sequence[str], seeds: Sequence[int], sampling: TextSampling) -> list[str]: ...

    def generate_image_tokens(self, prompts: Sequence[str], seeds: Sequence[int],
                              sampling: ImageSampling) -> ImageTokens: ...

    def decode_images(self, codes: torch.Tensor) -> list: ...

    def encode_images(self, images: Sequence) -> torch.Tensor: ...  # (B, N) codes of RGB images (VQ encoder)

    def yes_no_scores(self, images: Sequence, questions: Sequence[Sequence[str]]) -> list[YesNo]: ...

    def image_token_logps(self, prompts: Sequence[str], codes: torch.Tensor, branch: str = "cond",
                          cfg_scale: float = 1.0) -> torch.Tensor: ...

    def object_attention(self, prompts: Sequence[str], codes: torch.Tensor,
                         words: Sequence[Sequence[str]]) -> list[torch.Tensor]: ...

"""Preference optimisation of the adapter's model on selected pairs: a plain PyTorch loop and its pieces.

    data.py        PairData (the pairs as tensors), TrainingError
    objective.py   the recipe's weighted sum of the pure losses (ospo.losses)
    precompute.py  computed once before the loop: DPO's reference log-likelihoods, v3's object token weights
    loop.py        train(): schedule, data order, micro-batches, forward/backward, clip, AdamW, log, checkpoint
    checkpoint.py  resumable checkpoints and the final adapter/ or model/ outputs
    metrics.py     log.jsonl, TensorBoard, curves.png

Training talks to the model only through the `ospo.unified.UnifiedModel` protocol. The stage shell that reads the
pairs from a run directory is `ospo.stages.train`.
"""

from ospo.training.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint, save_outputs
from ospo.training.data import PairData, TrainingError
from ospo.training.loop import (ImageLogps, accumulation, batch_rows, learning_rate, micro_batch, prepare_model,
                                total_steps, train)
from ospo.training.metrics import MetricLog, plot_curves
from ospo.training.objective import objective
from ospo.training.precompute import add_precomputed, object_token_weights, reference_logps, write_mask_previews

__all__ = ["ImageLogps", "add_precomputed", "MetricLog", "PairData", "TrainingError", "accumulation", "batch_rows",
           "learning_rate", "list_checkpoints", "load_checkpoint", "micro_batch", "object_token_weights",
           "objective", "plot_curves", "prepare_model", "reference_logps", "save_checkpoint", "save_outputs",
           "total_steps", "train", "write_mask_previews"]

"""What the probe benchmarks (hidden_probe, vqa_probe, relation_probe) share: how they load their model."""

from __future__ import annotations

import os

import torch


def load_probe_model(model_dir: str | None, threads: int):
    """The `JanusAdapter` of `model_dir` (default: the shipped ShapeWorld checkpoint), offline, on `threads` CPU
    threads, with torch's global seed at 0 so that a probe's fresh weights and draws repeat."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(threads)
    torch.manual_seed(0)

    from ospo.model import JanusAdapter
    from ospo.shapeworld import checkpoint_path

    return JanusAdapter.from_pretrained(model_dir or str(checkpoint_path()))

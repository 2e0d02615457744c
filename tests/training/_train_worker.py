"""One process of the 2-process gloo training test (tests/training/test_loop.py): trains the tiny Janus on fixed pairs."""

import sys

import torch

from ospo.config import LoraSettings, TrainConfig
from ospo.model import JanusAdapter
from ospo.training import train

sys.path.insert(0, sys.argv[3])
from test_loop import make_pairs  # noqa: E402

torch.set_num_threads(1)
model_dir, out_dir, _, micro = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
adapter = JanusAdapter.from_pretrained(model_dir)
cfg = TrainConfig(lr=5e-3, steps=3, batch_size=4, micro_batch_size=micro, lora=LoraSettings(r=4, alpha=8),
                  save_every=0, keep_last=1, guidance=1.0)
train(adapter, make_pairs(adapter, 6), cfg, out_dir, seed=1, progress=False)

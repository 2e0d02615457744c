"""Shared fixtures: a tiny random Janus saved to disk and loaded back the way users load checkpoints."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

torch.set_num_threads(2)

PROMPTS = [
    "a red circle",
    "two blue cats left of a green tree",
    "a dog",
    "a yellow square above a purple triangle and a black star",
]


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    from ospo.tiny import save_tiny_janus

    return save_tiny_janus(tmp_path_factory.mktemp("tiny_janus"), seed=0)


@pytest.fixture(scope="session")
def tiny(tiny_dir):
    from ospo.model import JanusAdapter

    return JanusAdapter.from_pretrained(str(tiny_dir), batch_size=16)

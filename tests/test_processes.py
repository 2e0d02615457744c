"""One process and two give the same run directory, byte for byte, on every data stage of the shipped ShapeWorld
model, and the same first training step to float rounding (slow: two short loops)."""

import json
import os

import pytest

from ospo.cli import main
from ospo.shapeworld import checkpoint_path

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (checkpoint_path() / "model.safetensors").exists(),
                                 reason="the ShapeWorld checkpoint is not in this checkout")]
SMALL = ["--set", "prompts.counts={object1: 2, color1: 4, color2: 3, texture1: 2, spatial: 3, numeracy1: 3, "
                  "numeracy2: 3, complex: 3}", "--set", "chunk_size=4", "--set", "model.batch_size=3",
         "--set", "train.steps=2", "--set", "train.batch_size=4", "--set", "train.micro_batch_size=2"]


def files(root):
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            rel = os.path.relpath(os.path.join(folder, name), root)
            if not name.startswith(".lock") and name != "log.jsonl":  # the log holds timings
                out[rel] = open(os.path.join(folder, name), "rb").read()
    return out


def test_one_and_two_processes_write_the_same_files_on_every_stage(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    args = ["run", "--config", "shapeworld", *SMALL]
    assert main([*args, "--out", str(one)]) == 0
    assert main([*args, "--out", str(two), "--num-processes", "2"]) == 0
    a, b = files(one), files(two)
    data = [k for k in a if not k.startswith("train-")]
    assert {k.split(os.sep)[0] for k in data} >= {"prompts", "perturb", "densify", "images", "questions", "score"}
    assert any(k.startswith("images/previews/") for k in data) and any(k.startswith("select-") for k in data)
    assert sorted(a) == sorted(b)
    assert [k for k in data if a[k] != b[k]] == []
    # training all-reduces the two processes' gradients in another order than one process sums its micro-batches:
    # the first step's loss agrees to float rounding (Adam's first steps, near sign(g), then amplify last-bit
    # differences of near-zero gradients; tests/training/test_loop.py checks the update on the tiny Janus)
    (log,) = [k for k in os.listdir(one) if k.startswith("train-")]
    first = [json.loads((d / log / "log.jsonl").read_text().splitlines()[0]) for d in (one, two)]
    assert first[0]["loss"] == pytest.approx(first[1]["loss"], rel=1e-5, abs=1e-6)

"""End-to-end on the shipped ShapeWorld checkpoint (slow: CI runs these in their own time box)."""

import json

import pytest

from ospo.cli import main
from ospo.shapeworld import checkpoint_path

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (checkpoint_path() / "model.safetensors").exists(),
                                 reason="the ShapeWorld checkpoint is not in this checkout")]
SMALL = ["--set", "prompts.counts={object1: 2, object2: 3, color1: 3, color2: 4, texture1: 3, texture2: 4, "
                  "spatial: 4, numeracy1: 3, numeracy2: 4, complex: 4}"]


def test_demo_runs_end_to_end_and_resumes(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--limit", "2", "--images-per-prompt", "1", *SMALL]) == 0
    printed = capsys.readouterr().out
    assert "| task | base | ospo-v2 | difference (paired) |" in printed and "**overall**" in printed
    info = json.loads((out / "demo.json").read_text())
    assert info["outputs"]["adapter"] and (out / "report.html").stat().st_size > 0
    assert (out / "eval" / "base" / "results.json").exists() and (out / "eval" / "ospo-v2" / "results.json").exists()
    (select_dir,) = out.glob("select-v2*")  # the ShapeWorld config's thresholds add a hash to the name
    select = json.loads((select_dir / "manifest.json").read_text())
    assert select["counts"]["out"] > 0
    # a rerun resumes: every stage and both evaluations are found finished
    assert main(["demo", "--out", str(out), "--limit", "2", "--images-per-prompt", "1", *SMALL]) == 0
    again = json.loads((out / "demo.json").read_text())
    assert again["summary"] == info["summary"]
    assert max(v for k, v in again["seconds"].items() if not k.startswith("eval")) < 5.0
    # other training settings train another adapter: its evaluation is made afresh, never the last one's reused
    assert main(["demo", "--out", str(out), "--limit", "2", "--images-per-prompt", "1", *SMALL,
                 "--set", "train.steps=1"]) == 0
    third = json.loads((out / "demo.json").read_text())
    assert third["outputs"]["adapter"] != info["outputs"]["adapter"]
    trained = json.loads((out / "eval" / "ospo-v2" / "results.json").read_text())
    assert trained["weights"] == third["outputs"] and third["seconds"]["eval_trained"] > 0


def test_demo_iterations_train_again_on_data_the_first_iterations_model_drew(tmp_path, capsys):
    from ospo import pipeline

    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--limit", "1", "--images-per-prompt", "1", *SMALL, "--set", "train.steps=1"]
    assert main([*args, "--iterations", "2"]) == 0
    assert "| task | base | ospo-v2-iter-2 | difference (paired) |" in capsys.readouterr().out
    info = json.loads((out / "demo.json").read_text())
    first = pipeline.load_run_config(out)
    second = pipeline.load_run_config(out / "iter-2")
    (first_train,) = out.glob("train-ospo-v2*")
    assert second.model.adapter == str(first_train / "adapter")  # iteration 2 drew with iteration 1's model
    assert second.seed == first.seed + 1
    assert info["iterations"] == 2 and info["outputs"]["adapter"].startswith(str(out / "iter-2"))
    assert (out / "eval" / "ospo-v2-iter-2" / "results.json").exists()
    assert main([*args, "--iterations", "0"]) == 2
    assert "--iterations must be >= 1, got 0" in capsys.readouterr().err

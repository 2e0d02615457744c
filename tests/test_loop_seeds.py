"""`benchmarks.loop_seeds` end to end on the shipped checkpoint, shrunk (slow: CI runs these in their own time box)."""

import json

import pytest

from ospo.shapeworld import checkpoint_path

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (checkpoint_path() / "model.safetensors").exists(),
                                 reason="the ShapeWorld checkpoint is not in this checkout")]
SMALL = ["--set", "prompts.counts={object1: 2, object2: 3, color1: 3, color2: 4, texture1: 3, texture2: 4, "
                  "spatial: 4, numeracy1: 3, numeracy2: 4, complex: 4}", "--set", "train.steps=2"]


def test_each_loop_seed_runs_its_own_loop_and_the_pooled_row_pools_their_images(tmp_path, capsys):
    from benchmarks import loop_seeds
    from ospo.artifacts import read_jsonl

    out = tmp_path / "loops"
    args = ["--out", str(out), "--loop-seeds", "0,1", "--split", "dev", "--num-dev", "1", "--images-per-prompt", "1",
            "--seeds", "1", "--json", str(tmp_path / "t.json"), *SMALL]
    loop_seeds.main(args)
    printed = capsys.readouterr().out
    assert "| loop seed 0 |" in printed and "| loop seed 1 |" in printed and "| pooled (2 loops) |" in printed
    table = json.loads((tmp_path / "t.json").read_text())["table"]
    # two loops of their own: other prompts written, other adapters trained
    texts = [[r.text for r in read_jsonl(out / f"loop-{s}" / "prompts" / "records.jsonl")] for s in (0, 1)]
    assert texts[0] != texts[1]
    evals = [next((out / f"loop-{s}" / "eval-dev").glob("train-ospo-v2-*/seed-0/results.json")) for s in (0, 1)]
    adapters = [json.loads(e.read_text())["weights"] for e in evals]
    assert adapters[0]["adapter"] != adapters[1]["adapter"]
    # the pooled row weighs both loops' images equally (same prompts and counts): its overall is their mean
    pooled = table["pooled (2 loops)"]
    mean = (table["loop seed 0"]["overall"] + table["loop seed 1"]["overall"]) / 2
    assert pooled["overall"] == pytest.approx(mean, abs=1e-9)
    assert pooled["pairs"] == table["loop seed 0"]["pairs"] + table["loop seed 1"]["pairs"]
    # a rerun computes nothing again: the same table from the finished stages and evaluations
    loop_seeds.main(args)
    assert json.loads((tmp_path / "t.json").read_text())["table"] == table
    # other training settings train and evaluate other adapters on the same data (not drawn again), beside the first
    data_written = [(out / "loop-0" / stage / "manifest.json").stat().st_mtime_ns for stage in ("prompts", "images")]
    loop_seeds.main([*args, "--set", "train.steps=1"])
    assert len(list((out / "loop-0" / "eval-dev").glob("train-ospo-v2-*/seed-0/results.json"))) == 2
    assert [(out / "loop-0" / s / "manifest.json").stat().st_mtime_ns for s in ("prompts", "images")] == data_written
    loop_seeds.main(args)
    assert json.loads((tmp_path / "t.json").read_text())["table"] == table

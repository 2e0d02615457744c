"""`ospo run` / `ospo stage` on hand-made upstream stage outputs with the tiny random Janus."""

import dataclasses
import shutil

import numpy as np
import pytest
import torch
import yaml

from ospo.artifacts import StageDir, load_codes
from ospo.cli import main
from ospo.config import load_config
from ospo.pipeline import config_differences, prepare_run_dir
from ospo.records import DensePair, Negative, Prompt, QuestionSet, TrainingPair

PROMPTS = [Prompt("p0", "a red circle", "attribute", "color1", "in-context"),
           Prompt("p1", "two cats", "layout", "numeracy1", "in-context"),
           Prompt("p2", "a dog", "attribute", "object1", "in-context")]
NEGATIVES = [Negative("p0/n1", "p0", 1, "replace", "a blue circle"),
             Negative("p0/n2", "p0", 2, "replace", "a red star"),
             Negative("p1/n1", "p1", 1, "replace", "two dogs"), Negative("p2/n1", "p2", 1, "replace", "a cat")]
PAIRS = [DensePair("p0/n1", "p0", 1, "a red circle near a tree", "a blue circle near a tree"),
         DensePair("p0/n2", "p0", 2, "a red circle near a tree", "a red star near a tree"),
         DensePair("p1/n1", "p1", 1, "two cats left of a house", "two dogs left of a house"),
         DensePair("p2/n1", "p2", 1, "a dog near a car", "a cat near a car")]
SETS = [QuestionSet("p0", "p0", "positive", "a red circle", ("is there a red circle ?",)),
        QuestionSet("p0/n1", "p0", "negative", "a blue circle", ("is there a blue circle ?",)),
        QuestionSet("p0/n2", "p0", "negative", "a red star", ("is there a red star ?",)),
        QuestionSet("p1", "p1", "positive", "two cats", ("are there two cats ?", "is there a cat ?")),
        QuestionSet("p2", "p2", "positive", "a dog", ())]  # zero questions: cannot be chosen
PERMISSIVE = ["--set", "select.chosen_threshold=-1.0", "--set", "select.rejected_threshold=1.0",
              "--set", "select.require_negative_prompt=false"]


def write_upstream(run_dir):
    for name, records in (("prompts", PROMPTS), ("perturb", NEGATIVES), ("densify", PAIRS), ("questions", SETS)):
        stage = StageDir(run_dir, name)
        stage.write_part("c00000", records)
        stage.finish({"counts": {"in": len(records)}})
    return run_dir


def write_tiny_config(directory, tiny_dir, chunk_size: int = 2):
    """A run config for the tiny random Janus (small batches and chunks, so chunking and resuming are exercised)."""
    path = directory / "tiny.yaml"
    path.write_text(yaml.safe_dump({"model": {"path": str(tiny_dir), "batch_size": 4}, "chunk_size": chunk_size,
                                    "images": {"cfg_scale": 3.0}}))
    return path


@pytest.fixture(scope="module")
def config_file(tmp_path_factory, tiny_dir):
    return write_tiny_config(tmp_path_factory.mktemp("cfg"), tiny_dir)


@pytest.fixture(scope="module")
def done_run(tmp_path_factory, config_file):
    run_dir = write_upstream(tmp_path_factory.mktemp("runs") / "run")
    rc = main(["run", "--config", str(config_file), "--out", str(run_dir), "--stages", "select,images,score",
               *PERMISSIVE])
    assert rc == 0
    return run_dir


def select_dir(run_dir):
    (path,) = [p for p in run_dir.iterdir() if p.name.startswith("select-v2")]
    return StageDir(run_dir, path.name)


def test_run_writes_configs_manifests_and_v2_pairs(done_run, tiny):
    saved = load_config(done_run / "config.yaml")
    assert saved.chunk_size == 2 and saved.select.chosen_threshold == -1.0
    for name in ("images", "score", select_dir(done_run).name):
        assert (done_run / name / "config.yaml").is_file() and (done_run / name / "manifest.json").is_file()
    stage = select_dir(done_run)
    pairs = {r.id: r for r in stage.records()}
    rejected = {r.id: r.reason for r in stage.read_parts() if not isinstance(r, TrainingPair)}
    assert sorted(pairs) == ["p0", "p1"] and rejected == {"p2": "no-chosen-candidate"}
    manifest = stage.manifest()
    assert manifest["counts"]["in"] == 3 and manifest["counts"]["rejected_by_reason"] == {"no-chosen-candidate": 1}
    assert manifest["filtering"] == {"chosen": [3, 4], "rejected": [3, 4]}  # p2's images have zero questions
    p0 = pairs["p0"]
    assert p0.prompt == "a red circle" and p0.negative_prompt in ("a blue circle", "a red star")
    assert p0.chosen_image_id.endswith("/positive") and p0.rejected_image_id.endswith("/negative")
    assert pairs["p1"].negative_prompt is None  # p1's negative has no question set
    codes = {k: v for f in (done_run / "images" / "codes").glob("*") for k, v in load_codes(f).items()}
    with torch.no_grad():
        for image, text, key in ((p0.chosen_image_id, p0.prompt, "l_chosen"),
                                 (p0.rejected_image_id, p0.prompt, "l_rejected"),
                                 (p0.chosen_image_id, p0.negative_prompt, "l_chosen_given_negative")):
            forced = tiny.image_token_logps([text], torch.from_numpy(codes[image][None].astype(np.int64)))
            assert p0.scores[key] == pytest.approx(float(forced.mean()), abs=1e-4)


def test_stage_select_with_another_rule_leaves_earlier_stages_alone(done_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(done_run, run_dir)
    before = {n: (run_dir / n / "manifest.json").read_text() for n in ("images", "score")}
    stamps = {p: p.stat().st_mtime_ns for p in (run_dir / "images").rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["stage", "select", "--run", str(run_dir), "--set", "select.rule=v3"]) == 0
    out = capsys.readouterr().out
    assert "select-v3" in out and "filtering (v3)" in out
    assert StageDir(run_dir, "select-v3").complete
    assert {n: (run_dir / n / "manifest.json").read_text() for n in before} == before
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert load_config(run_dir / "config.yaml").select.rule == "v2"  # the run's own config is unchanged


def test_run_dir_with_another_config_is_refused_naming_the_keys(tmp_path, config_file, capsys):
    run_dir = tmp_path / "run"
    prepare_run_dir(run_dir, load_config(config_file))
    rc = main(["run", "--config", str(config_file), "--out", str(run_dir), "--stages", "select",
               "--set", "images.cfg_scale=2", "--set", "seed=3"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "images.cfg_scale" in err and "seed" in err and "select" not in err
    assert "images.cfg_scale: 3.0 then, 2.0 now" in err, err
    hint = err.split(": --set ", 1)[1].removesuffix(" resumes it").split(" --set ")  # the saved values
    assert sorted(h.split("=")[0] for h in hint) == ["images.cfg_scale", "seed"]
    prepare_run_dir(run_dir, load_config(config_file, ["images.cfg_scale=2", "seed=3", *hint]))  # they resume it
    prepare_run_dir(run_dir, load_config(config_file, ["select.rule=v3", "model.batch_size=2"]))  # allowed
    assert main(["stage", "score", "--run", str(tmp_path / "elsewhere")]) == 2
    assert "is not a run directory (no config.yaml)" in capsys.readouterr().err
    assert config_differences({"a": {"b": 1}, "c": 2}, {"a": {"b": 2}, "d": 1}) == ["a.b", "c", "d"]


@pytest.mark.parametrize("args,message", [
    (["--set", "select.rul=v3"], "unknown config key 'select.rul' (did you mean 'select.rule'?)"),
    (["--set", "images.cfg_scal=2"], "did you mean 'images.cfg_scale'?"),
    (["--set", "select.rule=v4"], "select.rule must be one of v1, v2, v3, best-of-n"),
    (["--stages", "imagez"], "unknown stage 'imagez' (did you mean 'images'?)"),
    (["--set", "chunk_size=0"], "chunk_size must be >= 1"),
])
def test_malformed_config_gives_a_one_line_error_naming_the_key(tmp_path, config_file, capsys, args, message):
    rc = main(["run", "--config", str(config_file), "--out", str(tmp_path / "run"), *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and len(err.splitlines()) == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("images:\n  cfg_scal: 2\n")
    assert main(["run", "--config", str(bad), "--out", str(tmp_path / "run")]) == 2
    assert "unknown config key 'images.cfg_scal' (did you mean 'images.cfg_scale'?)" in capsys.readouterr().err


def test_v2_drops_a_pair_without_a_negative_prompt_as_the_reference_does(done_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(done_run, run_dir)
    assert main(["stage", "select", "--run", str(run_dir), *PERMISSIVE[:4],
                 "--set", "select.require_negative_prompt=true"]) == 0
    (stage,) = [StageDir(run_dir, p.name) for p in run_dir.iterdir()
                if p.name.startswith("select-v2") and p.name != select_dir(done_run).name]
    assert [r.id for r in stage.records()] == ["p0"]  # p1 has no negative question set: no x~
    rejected = {r.id: r.reason for r in stage.read_parts() if not isinstance(r, TrainingPair)}
    assert rejected == {"p1": "no-negative-prompt", "p2": "no-chosen-candidate"}


def test_without_previews_the_judge_decodes_the_codes_to_the_same_scores_and_pairs(done_run, tmp_path,
                                                                                  config_file):
    run_dir = write_upstream(tmp_path / "run")
    assert main(["run", "--config", str(config_file), "--out", str(run_dir), "--stages", "select,images,score",
                 *PERMISSIVE, "--set", "images.previews=false"]) == 0
    assert not list((run_dir / "images").glob("previews/*.png"))
    for name in ("score", select_dir(done_run).name):
        assert (run_dir / name / "records.jsonl").read_bytes() == (done_run / name / "records.jsonl").read_bytes()
    without, with_previews = (StageDir(d, "images").records() for d in (run_dir, done_run))
    assert all(r.preview_sha == "" for r in without) and all(r.preview_sha for r in with_previews)
    assert [dataclasses.replace(r, preview_sha="") for r in with_previews] == without


def test_corrupt_codes_stop_v2_selection_with_an_error_naming_the_file(done_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(done_run, run_dir)
    shutil.rmtree(select_dir(run_dir).path)
    (run_dir / "images" / "codes" / "c00000.safetensors").write_bytes(b"garbage")
    assert main(["stage", "select", "--run", str(run_dir), *PERMISSIVE]) == 2
    err = capsys.readouterr().err.strip()  # progress bars come first
    last = err.splitlines()[-1]
    assert last.startswith("ospo stage: error: code file") and "c00000.safetensors" in last
    assert "Traceback" not in err and "Loading weights" not in err


def test_two_processes_equal_one_for_images_and_score(done_run, tmp_path, config_file):
    run_dir = write_upstream(tmp_path / "run")
    args = ["run", "--config", str(config_file), "--out", str(run_dir), "--stages", "images,score", *PERMISSIVE]
    assert main([*args, "--num-processes", "2"]) == 0
    for name in ("images", "score"):
        assert (run_dir / name / "records.jsonl").read_text() == (done_run / name / "records.jsonl").read_text()
    for f in (done_run / "images" / "codes").glob("*.safetensors"):
        assert (run_dir / "images" / "codes" / f.name).read_bytes() == f.read_bytes()


@pytest.mark.parametrize("name", ["shapeworld", "janus-pro-1b", "janus-pro-7b"])
def test_shipped_configs_load(name):
    cfg = load_config(name)  # a shipped config by name
    if name.startswith("janus-pro"):
        assert cfg.model.path == f"deepseek-community/Janus-Pro-{name[-2:].upper()}" and cfg.templates == "janus-pro"
        assert cfg.images.cfg_scale == 5.0 and cfg.model.dtype == "bfloat16"
        assert sum(cfg.prompts.counts.values()) == 16000
    else:
        assert cfg.model.path == "shapeworld" and cfg.templates == "shapeworld"


def test_a_run_saved_before_a_key_existed_resumes_when_the_key_is_at_its_default(tmp_path, config_file):
    from ospo.config import config_dict

    run_dir = tmp_path / "run"
    cfg = load_config(config_file)
    saved = config_dict(cfg)
    del saved["images"]["previews"]  # as a run directory made before images.previews existed
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    prepare_run_dir(run_dir, cfg)  # accepted
    with pytest.raises(Exception, match="images.previews"):
        prepare_run_dir(run_dir, load_config(config_file, ["images.previews=false"]))

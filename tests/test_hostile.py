"""Hostile and faulty inputs, table-driven: each case either gives the correct result or exits 2 with one line
naming the cause, and nothing a finished run holds is changed (CPU, offline; the tiny random Janus where a model is
needed)."""

import json
import os
from pathlib import Path

import pytest

from ospo.artifacts import lines, prompt_rows, read_jsonl, write_jsonl
from ospo.cli import main
from ospo.pipeline import lock_run_dir
from ospo.records import Prompt
from test_pipeline import write_tiny_config

SEPARATORS = ["\u2028", "\u2029", "\u0085", "\x1c", "\x1d", "\x1e", "\x0b", "\x0c"]  # str.splitlines() splits at each


@pytest.fixture(scope="module")
def cfg_file(tmp_path_factory, tiny_dir):
    return write_tiny_config(tmp_path_factory.mktemp("cfg"), tiny_dir)


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    return err[-1] if err else ""


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------- configs and --set values
CONFIG_CASES = [
    (["select.chosen_threshold=.nan"], "select.chosen_threshold must be a finite number, got nan"),
    (["select.rejected_threshold=.inf"], "select.rejected_threshold must be a finite number, got inf"),
    (["prompts.oversample=.inf"], "prompts.oversample must be a finite number, got inf"),
    (["prompts.oversample=0"], "prompts.oversample must be > 0, got 0.0"),
    (["train.lr=-.inf"], "train.lr must be a finite number, got -inf"),
    (["train.lr=0"], "train.lr must be > 0, got 0.0"),
    (["images.cfg_scale=.nan"], "images.cfg_scale must be a finite number, got nan"),
    (["images.temperature=.nan"], "images.temperature must be a finite number"),
    (["perturb.sampling.temperature=.nan"], "perturb.sampling.temperature must be a finite number"),
    (["perturb.sampling.top_p=0"], "perturb.sampling.top_p must be in (0, 1], got 0.0"),
    (["questions.sampling.max_new_tokens=0"], "questions.sampling.max_new_tokens must be >= 1, got 0"),
    (["train.micro_batch_size=0"], "train.micro_batch_size must be >= 1, got 0"),
    (["train.batch_size=-4"], "train.batch_size must be >= 1, got -4"),
    (["train.lora.dropout=2"], "train.lora.dropout must be in [0, 1], got 2.0"),
    (["train.lora.r=0"], "train.lora.r must be >= 1, got 0"),
    (["train.warmup_ratio=1.5"], "train.warmup_ratio must be in [0, 1], got 1.5"),
    (["train.keep_last=0"], "train.keep_last must be >= 1, got 0"),
    (["perturb.num_negatives=0"], "perturb.num_negatives must be >= 1, got 0"),
    (["perturb.max_redraws=-1"], "perturb.max_redraws must be >= 0, got -1"),
    (["select.chosen_threshold=3"], "select.chosen_threshold must be in [-1, 1], got 3.0"),
    (["prompts.counts={color1: -3}"], "prompts.counts.color1 must be a count >= 0, got -3"),
    (["prompts.counts={color1: 2.5}"], "prompts.counts.color1 must be a count >= 0, got 2.5"),
    (["model.batch_size=0"], "model.batch_size must be >= 1, got 0"),
    (["chunk_size=0"], "chunk_size must be >= 1, got 0"),
    (["prompts.counts=[1"], "is not valid YAML"),
    (["train.steps=*a"], "uses a YAML alias (*a)"),
]


@pytest.mark.parametrize("overrides,message", CONFIG_CASES)
def test_a_bad_config_value_is_one_line_and_writes_nothing(tmp_path, cfg_file, capsys, overrides, message):
    out = tmp_path / "run"
    args = [a for o in overrides for a in ("--set", o)]
    assert main(["run", "--config", str(cfg_file), "--out", str(out), *args]) == 2
    line = error_line(capsys)
    assert message in line and line.startswith("ospo run: error:")
    assert not (out / "config.yaml").exists()  # validated before anything is written


def billion_laughs() -> str:
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for i in range(1, 9):
        text += f"{chr(97 + i)}: &{chr(97 + i)} [{','.join(['*' + chr(96 + i)] * 9)}]\n"
    return "prompts:\n  counts:\n" + "".join("    " + line + "\n" for line in text.splitlines())


@pytest.mark.parametrize("text,message", [
    (billion_laughs(), "uses a YAML alias (*a)"),
    ("seed: 1\n" + "#" * (1 << 20) + "\n", "is larger than 1024 KiB"),
    (b"seed: 1\nrecipe: \xff\xfe\n", "is not UTF-8 text"),
    ("seed: [1\n", "is not valid YAML"),
    ("- 1\n- 2\n", "must be a mapping"),
], ids=["billion-laughs", "over-1-MiB", "not-utf8", "invalid-yaml", "not-a-mapping"])
def test_a_hostile_config_file_is_one_line_naming_it(tmp_path, capsys, text, message):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(text if isinstance(text, bytes) else text.encode())
    assert main(["run", "--config", str(bad), "--out", str(tmp_path / "run")]) == 2
    line = error_line(capsys)
    assert message in line and "bad.yaml" in line
    assert not (tmp_path / "run" / "config.yaml").exists()


@pytest.mark.parametrize("content", ["seed: [1\n", b"\xff\xfe\x00", "- a list\n"])
def test_a_corrupt_run_config_names_the_file_and_is_left_as_it_is(tmp_path, capsys, content):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_bytes(content if isinstance(content, bytes) else content.encode())
    before = files(run)
    assert main(["stage", "select", "--run", str(run)]) == 2
    assert str(run / "config.yaml") in error_line(capsys)
    assert files(run) == before


@pytest.mark.parametrize("flag,value", [("--cfg-scale", "nan"), ("--cfg-scale", "inf"), ("--temperature", "nan"),
                                        ("--temperature", "-inf"), ("--top-p", "nan"), ("--cfg-scale", "x")])
def test_generate_refuses_a_float_that_is_not_a_number(tmp_path, tiny_dir, capsys, flag, value):
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "--model", str(tiny_dir), "--prompt", "a red circle", "--out", str(tmp_path / "g"),
              f"{flag}={value}"])
    assert exit_.value.code == 2
    line = error_line(capsys)
    assert flag in line and ("finite number" in line or "not a number" in line)
    assert not (tmp_path / "g").exists()


# ------------------------------------------------------------------------------------- the run directory's lock
def test_the_config_is_written_under_the_lock_never_before_it(tmp_path, cfg_file, capsys):
    out = tmp_path / "run"
    with lock_run_dir(out):  # another run holds the fresh directory
        assert main(["run", "--config", str(cfg_file), "--out", str(out), "--set", "seed=2"]) == 2
    assert "is in use by another ospo run" in error_line(capsys)
    assert not (out / "config.yaml").exists()


# ------------------------------------------------------------------------------------- line separators in text
@pytest.mark.parametrize("sep", SEPARATORS)
def test_records_holding_any_unicode_line_separator_read_back_whole(tmp_path, sep):
    records = [Prompt("p0", f"a red{sep}circle", "attribute", "color1", "in-context", raw=f"x{sep}y"),
               Prompt("p1", "a blue square", "attribute", "color1", "in-context")]
    path = tmp_path / "records.jsonl"
    write_jsonl(path, records)
    assert read_jsonl(path) == records
    assert lines(f"a{sep}b\nc\r\nd") == [f"a{sep}b", "c", "d"]


@pytest.mark.parametrize("sep", SEPARATORS[:3])
def test_prompt_files_keep_prompts_holding_a_line_separator(tmp_path, sep):
    row = json.dumps({"prompt": f"a photo of a cat{sep}", "tag": "single_object"}, ensure_ascii=False)
    assert [r["prompt"] for r in prompt_rows(row + "\n" + row + "\n", "meta.jsonl")] == [f"a photo of a cat{sep}"] * 2
    from ospo.evaluate.export import read_compbench_file

    val = tmp_path / "color_val.txt"
    val.write_text(f"a green bench and a red car{sep}\na blue cup\n", encoding="utf-8")
    assert [p.text for p in read_compbench_file(val, "color")] == [f"a green bench and a red car{sep}", "a blue cup"]


# ------------------------------------------------------------------------------------- the training log
def test_a_torn_last_log_row_is_dropped_and_a_torn_middle_row_names_the_file(tmp_path):
    from ospo.training.data import TrainingError
    from ospo.training.metrics import MetricLog

    log = tmp_path / "log.jsonl"
    rows = [json.dumps({"step": s, "loss": 1.0 / s}) for s in (1, 2, 3)]
    log.write_text("\n".join(rows) + '\n{"step": 4, "lo')
    MetricLog(tmp_path, 2, enabled=True).close()
    assert log.read_text() == "\n".join(rows[:2]) + "\n"
    log.write_text(rows[0] + "\n{garbage\n" + rows[2] + "\n")
    with pytest.raises(TrainingError, match=f"{log}: line 2 is not a log row"):
        MetricLog(tmp_path, 3, enabled=True)


# ------------------------------------------------------------------------------------- adapters
@pytest.mark.parametrize("weights", ["bin", "none"])
def test_an_adapter_without_safetensors_weights_is_refused_unread(tmp_path, tiny_dir, capsys, weights):
    import torch

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
                                                             "target_modules": ["q_proj"]}))
    if weights == "bin":
        torch.save({"x": torch.zeros(1)}, adapter / "adapter_model.bin")  # tensors only: still refused
    assert main(["generate", "--model", str(tiny_dir), "--adapter", str(adapter), "--prompt", "a red circle",
                 "--out", str(tmp_path / "g")]) == 2
    line = error_line(capsys)
    assert "has no adapter_model.safetensors" in line and str(adapter) in line
    assert ("adapter_model.bin (pickle)" in line) == (weights == "bin")
    assert not (tmp_path / "g").exists() or not any((tmp_path / "g").iterdir())


# ------------------------------------------------------------------------------------- tampered finished stages
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, cfg_file):
    from test_pipeline import PERMISSIVE, write_upstream

    run = write_upstream(tmp_path_factory.mktemp("finished") / "run")
    assert main(["run", "--config", str(cfg_file), "--out", str(run), "--stages", "images,score,select",
                 *PERMISSIVE]) == 0
    return run


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2].rsplit(b"\n", 1)[0] + b"\n")


def edit_text(path: Path) -> None:
    path.write_text(path.read_text().replace("red", "blue", 1))


# (tampered stage, how, the stage run next, which reads it)
TAMPER = [("prompts", edit_text, "perturb"), ("prompts", truncate, "perturb"), ("densify", truncate, "images"),
          ("densify", edit_text, "images"), ("questions", truncate, "score"), ("images", truncate, "score"),
          ("score", truncate, "select"), ("perturb", truncate, "select")]


@pytest.mark.parametrize("stage,tamper,next_stage", TAMPER, ids=[f"{s}-{t.__name__}-then-{n}" for s, t, n in TAMPER])
def test_a_finished_stage_changed_afterwards_stops_the_next_stage_naming_the_file(tmp_path, finished_run, capsys,
                                                                                    stage, tamper, next_stage):
    import shutil

    from test_pipeline import PERMISSIVE

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    for d in run.iterdir():  # the stage that reads the tampered one starts afresh
        if d.is_dir() and d.name.split("-")[0] == next_stage:
            shutil.rmtree(d)
    records = run / stage / "records.jsonl"
    tamper(records)
    before = files(run)
    assert main(["stage", next_stage, "--run", str(run), *PERMISSIVE]) == 2
    line = error_line(capsys)
    assert f"{records} changed after its stage finished" in line
    after = files(run)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing finished changed


# ------------------------------------------------------------------------------------- outputs and small options
def test_generate_checks_its_output_folder_before_the_model_runs_and_never_overwrites(tmp_path, tiny_dir, capsys):
    base = ["generate", "--model", str(tiny_dir), "--prompt", "a red circle"]
    a_file = tmp_path / "file"
    a_file.write_text("keep")
    assert main([*base, "--out", str(a_file)]) == 2
    assert f"--out {a_file} is a file, not a folder" in error_line(capsys) and a_file.read_text() == "keep"
    out = tmp_path / "g"
    assert main([*base, "--out", str(out)]) == 0
    capsys.readouterr()
    before = files(out)
    assert main([*base, "--prompt", "a blue square", "--out", str(out)]) == 2
    assert "already holds images.jsonl" in error_line(capsys) and files(out) == before
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):  # root writes anywhere: nothing to check then
            assert main([*base, "--out", str(locked)]) == 2
            assert "is not writable" in error_line(capsys)
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize("args,message", [
    (["--images-per-prompt", "0"], "--images-per-prompt and --limit must be >= 1"),
    (["--limit", "-1"], "--images-per-prompt and --limit must be >= 1"),
    (["--limit", "0"], "--images-per-prompt and --limit must be >= 1"),
])
def test_eval_shapeworld_refuses_counts_below_one(tmp_path, capsys, args, message):
    assert main(["eval", "shapeworld", "--out", str(tmp_path / "e"), *args]) == 2
    assert message in error_line(capsys) and not (tmp_path / "e").exists()


def test_eval_shapeworld_checks_its_output_before_generating(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("keep")
    assert main(["eval", "shapeworld", "--out", str(a_file), "--limit", "1"]) == 2
    assert "is a file, not a folder" in error_line(capsys)


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_export_refuses_an_empty_geneval_file(tmp_path, tiny_dir, capsys, content):
    meta = tmp_path / "evaluation_metadata.jsonl"
    meta.write_text(content)
    assert main(["eval", "export", "geneval", "--model", str(tiny_dir), "--prompts", str(meta),
                 "--out", str(tmp_path / "x")]) == 2
    assert "no prompts in it" in error_line(capsys)


def test_export_refuses_zero_images_per_prompt_instead_of_using_the_default(tmp_path, tiny_dir, capsys):
    meta = tmp_path / "evaluation_metadata.jsonl"
    meta.write_text(json.dumps({"prompt": "a photo of a cat", "tag": "single_object"}) + "\n")
    assert main(["eval", "export", "geneval", "--model", str(tiny_dir), "--prompts", str(meta),
                 "--out", str(tmp_path / "x"), "--images-per-prompt", "0"]) == 2
    assert "--images-per-prompt, --limit and --num-processes must be >= 1" in error_line(capsys)


# ------------------------------------------------------------------------------------- --num-processes workers
@pytest.mark.skipif(not os.sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux's")
def test_workers_die_with_a_killed_parent(tmp_path):
    """A `--num-processes` parent SIGKILLed mid-run: its workers stop too, so the rerun is not refused as "in use"."""
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "parent.py"
    # the workers run a stand-in for `python -m ospo.cli` that notes its pid and sleeps
    (tmp_path / "ospo_sleep.py").write_text("import os, time\nopen(os.environ['PIDS'] + os.environ['OSPO_RANK'], 'w')"
                                            ".write(str(os.getpid()))\ntime.sleep(60)\n")
    code = ("import sys, subprocess\nimport ospo.pipeline as p\n"
            "real = subprocess.Popen\n"
            "def popen(cmd, **kw):\n    return real([sys.executable, '-m', 'ospo_sleep'], **kw)\n"
            "p.subprocess.Popen = popen\nsys.exit(p.spawn_workers([], 2))\n")
    script.write_text(code)
    env = {**os.environ, "PIDS": str(tmp_path / "pid-"), "PYTHONPATH": f"{tmp_path}{os.pathsep}"
           f"{os.environ.get('PYTHONPATH', '')}"}
    parent = subprocess.Popen([sys.executable, str(script)], env=env)
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"pid-{r}").exists() for r in (0, 1)) and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = [int((tmp_path / f"pid-{r}").read_text()) for r in (0, 1)]
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in pids if _running(pid)]
        time.sleep(0.05)
    assert alive == []


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"  # a zombie has exited (its parent is gone, init reaps it)
    except FileNotFoundError:
        return False


# ------------------------------------------------------------------------------------- models, devices, images
def test_a_truncated_checkpoint_an_unknown_device_and_a_decompression_bomb_are_one_line_each(tmp_path, tiny_dir,
                                                                                            capsys):
    import shutil

    from PIL import Image

    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    assert main(["generate", "--model", str(broken), "--prompt", "a dog", "--out", str(tmp_path / "a")]) == 2
    assert f"cannot load model '{broken}'" in error_line(capsys)
    assert main(["generate", "--model", str(tiny_dir), "--device", "tpu", "--prompt", "a dog",
                 "--out", str(tmp_path / "b")]) == 2
    assert "unknown device 'tpu'" in error_line(capsys)
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb)  # 40 KB on disk, 400 million pixels decoded
    assert main(["ask", "--model", str(tiny_dir), "--image", str(bomb), "--question", "is there a dog?"]) == 2
    assert f"image {bomb} is too large to decode" in error_line(capsys)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("change", ["swap", "corrupt"])
def test_previews_changed_after_the_images_stage_stop_the_score_stage_naming_the_file(tmp_path, finished_run, capsys,
                                                                                       change):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    for d in run.iterdir():
        if d.is_dir() and d.name.startswith(("score", "select")):
            shutil.rmtree(d)
    previews = sorted((run / "images" / "previews").glob("*.png"))
    a, b = previews[0], previews[1]
    if change == "swap":
        data_a, data_b = a.read_bytes(), b.read_bytes()
        a.write_bytes(data_b)
        b.write_bytes(data_a)
    else:
        a.write_bytes(a.read_bytes()[:-20])
    before = files(run)
    assert main(["stage", "score", "--run", str(run)]) == 2
    assert f"{a} changed after its stage finished" in error_line(capsys)
    assert {k: v for k, v in files(run).items() if k in before} == before


def test_a_prompt_longer_than_the_models_context_is_refused_before_drawing(tmp_path, tiny_dir, capsys):
    long = " ".join(["a red circle"] * 200)
    assert main(["generate", "--model", str(tiny_dir), "--prompt", long, "--out", str(tmp_path / "g")]) == 2
    line = error_line(capsys)
    assert "more than the model's 512; shorten it" in line and not (tmp_path / "g").exists()

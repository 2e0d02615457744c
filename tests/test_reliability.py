"""Reliability and safety on the tiny random Janus, CPU-only and offline: SIGKILL at random points then resume,
a disk that fills up mid-write and a read-only folder, loading weights without unpickling, hostile ids / texts /
adapters through the CLI, and two runs on one run directory.

The kill loops start `python -m ospo.cli` in a subprocess and resume with the same command in this process; by
default 3 trials per target, 10 more per target under `-m slow`.
"""

import ast
import dataclasses
import errno
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from ospo import artifacts
from ospo.artifacts import ArtifactError, StageDir, atomic_write_text
from ospo.cli import main
from ospo.config import load_config
from ospo.errors import ModelLoadError
from ospo.pipeline import RunDirError, lock_run_dir
from ospo.records import DensePair, Rejected
from ospo.stages.train import stage_name as train_stage_name
from test_pipeline import NEGATIVES, PAIRS, PERMISSIVE, PROMPTS, SETS, write_tiny_config

EVIL_TEXT = "<img src=x onerror=alert(1)> a red circle"
UPSTREAM = {"prompts": [dataclasses.replace(PROMPTS[0], text=EVIL_TEXT), *PROMPTS[1:]], "perturb": NEGATIVES,
            "densify": PAIRS, "questions": SETS}
TRAIN = ["--set", "train.steps=6", "--set", "train.batch_size=2", "--set", "train.micro_batch_size=1",
         "--set", "train.lora.r=4", "--set", "train.lora.alpha=8", "--set", "train.save_every=2",
         "--set", "train.lr=1e-2"]  # a large lr, so that the weights compared after a resume have moved
ADAPTER_ATOL = 1e-6
ENV = {**os.environ, "OMP_NUM_THREADS": "2"}  # as this process (conftest), so floats match to the bit


# ------------------------------------------------------------------------------------------------ run directories
def write_upstream(run_dir: Path, densify=None) -> Path:
    for name, records in {**UPSTREAM, **({"densify": densify} if densify is not None else {})}.items():
        stage = StageDir(run_dir, name)
        stage.write_part("c00000", records)
        stage.finish({"counts": {"in": len(records)}})
    return run_dir


def data_args(cfg: Path, run_dir: Path, stages: str = "images,score,select") -> list[str]:
    return ["run", "--config", str(cfg), "--out", str(run_dir), "--stages", stages, *PERMISSIVE]


def train_args(run_dir: Path) -> list[str]:
    return ["stage", "train", "--run", str(run_dir), *TRAIN]


def train_dir(run_dir: Path) -> Path:
    return run_dir / train_stage_name(load_config(run_dir / "config.yaml", TRAIN[1::2]))


def is_temporary(rel: str) -> bool:
    """Leftovers of an interrupted atomic write (`.NAME.XXXX.tmp`) or checkpoint (`.tmp-step-N/`): hidden, and
    outside every pattern a reader looks for (`*.jsonl`, `*.safetensors`, `*.png`, `step-*`)."""
    return any(part.startswith(".tmp-step-") or (part.startswith(".") and part.endswith(".tmp"))
               for part in Path(rel).parts)


def snapshot(root: Path) -> dict[str, bytes]:
    """{relative path: bytes} of every file under `root` except lock files and temporary leftovers."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            rel = os.path.relpath(os.path.join(folder, name), root)
            if not is_temporary(rel) and not name.startswith(".lock"):
                out[rel] = Path(folder, name).read_bytes()
    return out


def assert_same_files(got: dict[str, bytes], expected: dict[str, bytes]) -> None:
    assert sorted(got) == sorted(expected)
    assert [k for k in expected if got[k] != expected[k]] == []


def progress(root: Path) -> int:
    """Files under `root` plus lines of its log.jsonl files: grows with every write of a run."""
    n = 0
    for folder, _, files in os.walk(root):
        n += len(files)
        if "log.jsonl" in files:
            n += Path(folder, "log.jsonl").read_text().count("\n")
    return n


def kill_at_random_point(argv: list[str], watch: Path, total: int, rng: random.Random, log: Path) -> bool:
    """Starts `ospo <argv>` in a subprocess, waits until `watch` has grown by k (k uniform in 1..total-1) plus a
    delay uniform in [0, 0.05) s, then SIGKILLs it. Returns whether it was still running when killed."""
    start, k, delay = progress(watch), rng.randint(1, total - 1), rng.uniform(0, 0.05)
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "ospo.cli", *argv], env=ENV, stdout=subprocess.DEVNULL,
                                stderr=err)
    try:
        deadline = time.monotonic() + 600
        while proc.poll() is None and progress(watch) < start + k and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(delay)
        running = proc.poll() is None
        if running:
            proc.send_signal(signal.SIGKILL)
        assert proc.wait() == (-signal.SIGKILL if running else 0), log.read_text()[-2000:]
        return running
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def last_error_line(capsys) -> tuple[str, str]:
    """(last line of stderr, all of stderr): progress bars come first, on lines ended by '\\r'."""
    err = capsys.readouterr().err
    return err.strip().splitlines()[-1], err


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def cfg_file(tmp_path_factory, tiny_dir):
    return write_tiny_config(tmp_path_factory.mktemp("cfg"), tiny_dir, chunk_size=1)


@pytest.fixture(scope="module")
def data_run(tmp_path_factory, cfg_file):
    """images, score, select run uninterrupted, in this process."""
    run_dir = write_upstream(tmp_path_factory.mktemp("base") / "run")
    assert main(data_args(cfg_file, run_dir)) == 0
    for records in run_dir.glob("*/records.jsonl"):
        ids = [r.id for r in artifacts.read_jsonl(records)]
        assert ids and len(ids) == len(set(ids))
    return run_dir


@pytest.fixture(scope="module")
def train_run(tmp_path_factory, data_run):
    """data_run plus `ospo stage train`, uninterrupted, in this process."""
    run_dir = tmp_path_factory.mktemp("base") / "trained"
    shutil.copytree(data_run, run_dir)
    assert main(train_args(run_dir)) == 0
    return run_dir


# ------------------------------------------------------------------------------------------------ 1. SIGKILL
def kill_and_resume_data_stages(trials: int, seed: int, tmp_path: Path, cfg_file: Path, data_run: Path,
                                processes: int = 1) -> int:
    """With `processes` 2 the killed command is a `--num-processes 2` parent (its workers die with it) and the rerun
    is too; the files must still equal the one-process uninterrupted run's."""
    rng, expected, killed = random.Random(seed), snapshot(data_run), 0
    total = progress(data_run) - progress(write_upstream(tmp_path / "probe"))
    more = ["--num-processes", str(processes)] if processes > 1 else []
    for t in range(trials):
        run_dir = write_upstream(tmp_path / f"run{t}")
        killed += kill_at_random_point([*data_args(cfg_file, run_dir), *more], run_dir, total, rng,
                                       tmp_path / f"err{t}")
        assert main([*data_args(cfg_file, run_dir), *more]) == 0  # the same command, to completion
        assert_same_files(snapshot(run_dir), expected)
    return killed


def test_sigkill_during_data_stages_then_rerun_gives_the_uninterrupted_files(tmp_path, cfg_file, data_run):
    """Every file of images, score and select (records, rejected, manifests, codes, previews) is byte-identical to
    the uninterrupted run's; at most hidden `.NAME.XXXX.tmp` files of the killed write remain beside them."""
    assert kill_and_resume_data_stages(3, seed=1, tmp_path=tmp_path, cfg_file=cfg_file, data_run=data_run) >= 1


def test_sigkill_of_a_two_process_run_then_rerun_gives_the_one_process_files(tmp_path, cfg_file, data_run):
    kill_and_resume_data_stages(2, seed=5, tmp_path=tmp_path, cfg_file=cfg_file, data_run=data_run, processes=2)


@pytest.mark.slow
def test_sigkill_during_data_stages_ten_more_trials(tmp_path, cfg_file, data_run):
    assert kill_and_resume_data_stages(10, seed=2, tmp_path=tmp_path, cfg_file=cfg_file, data_run=data_run) >= 5


def kill_and_resume_training(trials: int, seed: int, tmp_path: Path, train_run: Path) -> int:
    """Tolerance: adapter tensors within ADAPTER_ATOL = 1e-6 (absolute) of the uninterrupted run's; resuming
    restores weights, optimizer state and the data position exactly, so only float summation order may differ."""
    rng, killed = random.Random(seed), 0
    base = train_dir(train_run)
    expected = load_file(str(base / "adapter" / "adapter_model.safetensors"))
    base_log = [json.loads(r) for r in (base / "log.jsonl").read_text().splitlines()]
    data_files = {k: v for k, v in snapshot(train_run).items() if not k.startswith(base.name)}
    for t in range(trials):
        run_dir = tmp_path / f"run{t}"
        shutil.copytree(train_run, run_dir, ignore=lambda d, names: [n for n in names if n.startswith("train-")])
        killed += kill_at_random_point(train_args(run_dir), run_dir, progress(base), rng, tmp_path / f"err{t}")
        assert main(train_args(run_dir)) == 0
        out = train_dir(run_dir)
        got = load_file(str(out / "adapter" / "adapter_model.safetensors"))
        assert sorted(got) == sorted(expected)
        assert max((got[k] - expected[k]).abs().max().item() for k in got) <= ADAPTER_ATOL
        assert max((expected[k]).abs().max().item() for k in expected if "lora_B" in k) > 1e-3  # it trained
        log = [json.loads(r) for r in (out / "log.jsonl").read_text().splitlines()]
        assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]  # no duplicated or missing rows
        assert [r["loss"] for r in log] == pytest.approx([r["loss"] for r in base_log], rel=1e-5)
        names = sorted(p.name for p in (out / "checkpoints").iterdir())
        assert names[-2:] == ["step-000004", "step-000006"] and not any(n.startswith(".tmp") for n in names)
        for name in ("records.jsonl", "rejected.jsonl", "identity.json"):
            assert (out / name).read_bytes() == (base / name).read_bytes()
        assert_same_train_manifest(out, base)
        assert {k: v for k, v in snapshot(run_dir).items() if not k.startswith(out.name)} == data_files
    return killed


def assert_same_train_manifest(out: Path, base: Path) -> None:
    """The manifests agree but for where the run was resumed from and the run directory's own paths; the final
    metrics to float rounding."""
    got, want = (json.loads((d / "manifest.json").read_text()) for d in (out, base))
    assert got["final"] and got["final"] == pytest.approx(want["final"], rel=1e-5)
    skip = {"final", "resumed_from", "outputs"}
    assert {k: v for k, v in got.items() if k not in skip} == {k: v for k, v in want.items() if k not in skip}
    assert sorted(got["outputs"]) == sorted(want["outputs"])


def test_a_kill_between_the_last_checkpoint_and_the_manifest_keeps_the_final_metrics(tmp_path, train_run):
    run_dir = tmp_path / "run"
    shutil.copytree(train_run, run_dir)
    out = train_dir(run_dir)
    (out / "manifest.json").unlink()  # what a SIGKILL after the final checkpoint leaves
    assert main(train_args(run_dir)) == 0
    assert_same_train_manifest(out, train_dir(train_run))


def test_sigkill_during_training_then_rerun_reaches_the_same_adapter(tmp_path, train_run):
    """Resumed from its last checkpoint, training ends with adapter_model.safetensors tensors within 1e-6 (absolute)
    of the uninterrupted run's, the same per-step losses (rel 1e-5), and log rows 1..6 exactly once."""
    assert kill_and_resume_training(3, seed=3, tmp_path=tmp_path, train_run=train_run) >= 1


@pytest.mark.slow
def test_sigkill_during_training_ten_more_trials(tmp_path, train_run):
    assert kill_and_resume_training(10, seed=4, tmp_path=tmp_path, train_run=train_run) >= 5


# ------------------------------------------------------------------------------------------------ 2. disk trouble
class FullDisk:
    """Stands in for the `os` module inside ospo.artifacts: its `fail_at`-th atomic write (0-based) puts half of the
    bytes into the temporary file, then raises OSError(ENOSPC) as a disk that fills up mid-write does."""

    def __init__(self, fail_at: int):
        self.fail_at, self.count, self.target = fail_at, 0, None

    def __getattr__(self, name):
        return getattr(os, name)

    def fdopen(self, fd, mode="r"):
        f = os.fdopen(fd, mode)
        self.count += 1
        if self.count - 1 != self.fail_at:
            return f
        tmp = Path(os.readlink(f"/proc/self/fd/{fd}"))  # .NAME.XXXX.tmp beside NAME
        self.target = tmp.with_name(tmp.name[1:].rsplit(".", 2)[0])
        return _HalfThenFull(f)


class _HalfThenFull:
    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()
        return False

    def write(self, data):
        self.f.write(data[:len(data) // 2])
        self.f.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_when_overwriting_keeps_the_old_file_and_names_it(tmp_path, monkeypatch):
    path = tmp_path / "records.jsonl"
    path.write_text("old\n")
    monkeypatch.setattr(artifacts, "os", FullDisk(0))
    with pytest.raises(ArtifactError) as e:
        atomic_write_text(path, "new\n" * 1000)
    assert str(e.value) == f"could not write {path}: No space left on device"
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["records.jsonl"]  # no temporary file left


def test_full_disk_midway_through_a_run_keeps_every_artifact_and_names_the_file(tmp_path, monkeypatch, capsys,
                                                                                 cfg_file, data_run):
    """The disk fills up at a write drawn at random; the run stops with one line naming that file; every file that
    existed before is byte-identical; the rerun on a free disk gives the uninterrupted run's files."""
    written = len(snapshot(data_run)) - len(snapshot(write_upstream(tmp_path / "probe")))
    for n, fail_at in enumerate(random.Random(5).sample(range(written), 3)):
        run_dir = write_upstream(tmp_path / f"run{n}")
        before = snapshot(run_dir)
        disk = FullDisk(fail_at)
        with monkeypatch.context() as m:
            m.setattr(artifacts, "os", disk)
            assert main(data_args(cfg_file, run_dir)) == 2
        line, err = last_error_line(capsys)
        assert line == f"ospo run: error: could not write {disk.target}: No space left on device"
        assert "Traceback" not in err and disk.target.is_relative_to(run_dir)
        assert {k: v for k, v in snapshot(run_dir).items() if k in before} == before
        assert not disk.target.exists() and not list(disk.target.parent.glob(f".{disk.target.name}.*"))
        assert main(data_args(cfg_file, run_dir)) == 0
        assert_same_files(snapshot(run_dir), snapshot(data_run))


def make_read_only(folder: Path, monkeypatch) -> None:
    """chmod 555; root writes into such folders anyway, so as root refuse creating files and folders in `folder`
    (tempfile.mkstemp inside ospo.artifacts, Path.mkdir) with the error the kernel gives everyone else."""
    folder.chmod(0o555)
    if os.geteuid() != 0:
        return

    def refuse(path):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    def mkstemp(*args, dir=None, **kw):
        return refuse(dir) if Path(dir) == folder else tempfile.mkstemp(*args, dir=dir, **kw)

    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kw):
        return refuse(self) if self.parent == folder and not self.exists() else real_mkdir(self, *args, **kw)

    monkeypatch.setattr(artifacts, "tempfile", SimpleNamespace(mkstemp=mkstemp))
    monkeypatch.setattr(Path, "mkdir", mkdir)


def test_read_only_folder_stops_the_run_naming_the_file_and_keeps_artifacts(tmp_path, monkeypatch, capsys, cfg_file):
    run_dir = write_upstream(tmp_path / "run")
    previews = run_dir / "images" / "previews"
    previews.mkdir(parents=True)
    before = snapshot(run_dir)
    try:
        with monkeypatch.context() as m:
            make_read_only(previews, m)
            assert main(data_args(cfg_file, run_dir, "images")) == 2
    finally:
        previews.chmod(0o755)
    line, err = last_error_line(capsys)
    assert line.startswith(f"ospo run: error: could not write {previews}/p0__n1__") and "Traceback" not in err
    assert line.endswith(".png: Permission denied")
    assert {k: v for k, v in snapshot(run_dir).items() if k in before} == before
    assert list(previews.iterdir()) == []


def test_read_only_run_dir_refuses_a_new_stage_folder_naming_it(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    try:
        with monkeypatch.context() as m:
            make_read_only(run_dir, m)
            with pytest.raises(ArtifactError) as e:
                StageDir(run_dir, "score").claim({"stage": "score"})
    finally:
        run_dir.chmod(0o755)
    assert str(e.value) == f"could not create {run_dir / 'score' / 'parts'}: Permission denied"


# ------------------------------------------------------------------------------------------------ 3. safe loading
def test_source_loads_weights_only_through_safetensors_or_weights_only_torch_load():
    """Every torch.load passes weights_only=True; no pickle/dill/joblib load, np.load(allow_pickle=True),
    trust_remote_code=True or use_safetensors=False anywhere in src/ospo."""
    src = Path(__file__).resolve().parents[1] / "src" / "ospo"
    torch_loads, bad = 0, []
    for path in sorted(src.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func, kw = node.func, {k.arg: k.value for k in node.keywords}
            where = f"{path.relative_to(src)}:{node.lineno}"
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else None
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if owner == "torch" and name == "load":
                torch_loads += 1
                if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                    bad.append(f"{where}: torch.load without weights_only=True")
            if owner in ("pickle", "dill", "joblib", "cloudpickle") and name in ("load", "loads", "Unpickler"):
                bad.append(f"{where}: {owner}.{name}")
            for key, unsafe in (("trust_remote_code", True), ("allow_pickle", True), ("use_safetensors", False)):
                if key in kw and not (isinstance(kw[key], ast.Constant) and kw[key].value is not unsafe):
                    bad.append(f"{where}: {key}={ast.unparse(kw[key])}")
    assert bad == [] and torch_loads >= 2  # train.py's and pretrain.py's optimizer states


class Payload:
    """Unpickling this creates the file `marker`: proof that something was unpickled."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_payload_is_live_when_unpickled(tmp_path):  # so the two tests below would see an unpickling
    pickle.loads(pickle.dumps(Payload(tmp_path / "ran")))
    assert (tmp_path / "ran").exists()


def test_checkpoint_with_only_pickled_bin_weights_is_refused_unread(tmp_path, tiny_dir, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_dir, model, ignore=shutil.ignore_patterns("*.safetensors"))
    (model / "pytorch_model.bin").write_bytes(pickle.dumps(Payload(tmp_path / "ran")))
    assert main(["generate", "--model", str(model), "--prompt", "a dog", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == f"ospo generate: error: '{model}' has no *.safetensors weights (ospo loads safetensors only)\n"
    assert not (tmp_path / "ran").exists() and not (tmp_path / "out").exists()


def test_optimizer_state_holding_pickled_objects_is_refused_naming_the_file(tmp_path, train_run, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(train_run, run_dir)
    out = train_dir(run_dir)
    (out / "manifest.json").unlink()  # unfinished: the rerun resumes from the last checkpoint
    last = out / "checkpoints" / "step-000006"
    state = torch.load(last / "optimizer.pt", weights_only=True)
    torch.save({**state, "note": Payload(tmp_path / "ran")}, last / "optimizer.pt")
    weights = (last / "trainable.safetensors").read_bytes()
    capsys.readouterr()
    assert main(train_args(run_dir)) == 2
    line, err = last_error_line(capsys)
    assert line == (f"ospo stage: error: cannot resume: {last / 'optimizer.pt'} holds objects other than tensors, "
                    f"which ospo does not unpickle; delete {last} to resume from the checkpoint before it, or use a "
                    f"new run directory")
    assert "Traceback" not in err and not (tmp_path / "ran").exists()
    assert (last / "trainable.safetensors").read_bytes() == weights
    shutil.rmtree(last)  # as the message says: resumes from step 4 and ends where the uninterrupted run did
    assert main(train_args(run_dir)) == 0
    got = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    expected = load_file(str(train_dir(train_run) / "adapter" / "adapter_model.safetensors"))
    assert max((got[k] - expected[k]).abs().max().item() for k in got) <= ADAPTER_ATOL


# ------------------------------------------------------------------------------------------------ 4. hostile input
LONG = "a/" * 89 + "a"  # a valid id (179 characters), but its file name ('/' -> '__') passes 255 bytes


@pytest.mark.parametrize("pair_id,message", [
    ("../../../escape", "invalid record id '../../../escape/positive'"),
    ("p0/../../../escape", "invalid record id 'p0/../../../escape/positive'"),
    ("/tmp/escape", "invalid record id '/tmp/escape/positive'"),
    ("p0\x00escape", "invalid record id 'p0\\x00escape/positive'"),
    ("x" * 300, f"invalid record id '{'x' * 300}/positive'"),
    (LONG, "could not write {previews}/" + LONG.replace("/", "__") + "__positive.png: File name too long"),
])
def test_hostile_record_ids_never_become_paths_outside_the_run_dir(tmp_path, capsys, cfg_file, pair_id, message):
    run_dir = write_upstream(tmp_path / "run", densify=[DensePair(pair_id, "p0", 1, "a red circle", "a blue circle")])
    assert main(data_args(cfg_file, run_dir, "images")) == 2
    line, err = last_error_line(capsys)
    previews = run_dir / "images" / "previews"
    assert line == "ospo run: error: " + message.format(previews=previews) and "Traceback" not in err
    assert os.listdir(tmp_path) == ["run"] and not (previews.exists() and os.listdir(previews))
    assert not [p for up in tmp_path.parents[:3] for p in up.glob("*escape*")]


def test_prompt_text_never_names_a_file_and_html_in_it_is_escaped_in_the_report(tmp_path, tiny_dir, data_run,
                                                                                capsys):
    hostile = "../../escape/" + EVIL_TEXT
    out = tmp_path / "gen"
    assert main(["generate", "--model", str(tiny_dir), "--prompt", hostile, "--out", str(out)]) == 0
    assert sorted(os.listdir(out)) == ["00000.png", "codes.safetensors", "images.jsonl"]
    assert json.loads((out / "images.jsonl").read_text())["prompt"] == hostile
    page = tmp_path / "report.html"
    assert main(["report", str(data_run), "--out", str(page)]) == 0
    html = page.read_text()
    assert "&lt;img src=x onerror=alert(1)&gt; a red circle" in html and "<img src=x" not in html


def test_adapter_of_another_base_model_is_refused_in_one_line(tmp_path, tiny_dir, capsys):
    from ospo.config import LoraSettings, TrainConfig
    from ospo.model import JanusAdapter
    from ospo.training import prepare_model
    from ospo.tiny import TinyJanusSpec, save_tiny_janus

    other = JanusAdapter.from_pretrained(str(save_tiny_janus(tmp_path / "other", TinyJanusSpec(hidden_size=32,
                                                                                               intermediate_size=64))))
    prepare_model(other, TrainConfig(lora=LoraSettings(r=4, alpha=8)))
    other.model.save_pretrained(tmp_path / "adapter")
    args = ["generate", "--model", str(tiny_dir), "--adapter", str(tmp_path / "adapter"), "--prompt", "a dog",
            "--out", str(tmp_path / "out")]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"ospo generate: error: adapter '{tmp_path / 'adapter'}' does not fit this base model: ")
    assert "size mismatch" in line  # the line that says what does not fit, not PEFT's header
    assert "Traceback" not in err and not (tmp_path / "out").exists()
    with pytest.raises(ModelLoadError):  # --debug: the exception with its traceback
        main(["--debug", *args])


def test_missing_previews_are_rejected_with_their_reason_and_counted(tmp_path, data_run, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(data_run, run_dir, ignore=lambda d, names: [n for n in names if n.startswith(("score",
                                                                                                  "select"))])
    previews = run_dir / "images" / "previews"
    (previews / "p0__n1__positive.png").unlink()
    (previews / "p1__n1__negative.png").unlink()
    assert main(["stage", "score", "--run", str(run_dir)]) == 0
    base = StageDir(data_run, "score").manifest()["counts"]["rejected_by_reason"]
    manifest = StageDir(run_dir, "score").manifest()
    assert manifest["counts"]["rejected_by_reason"] == {**base, "unreadable-preview": 2}
    rejected = {r.id: r.detail for r in StageDir(run_dir, "score").read_parts()
                if isinstance(r, Rejected) and r.reason == "unreadable-preview"}
    assert sorted(rejected) == ["p0/n1/positive", "p1/n1/negative"]
    assert rejected["p1/n1/negative"] == f"image {previews}/p1__n1__negative.png does not exist"
    assert "score: " in capsys.readouterr().out


def test_corrupt_code_file_stops_training_with_one_line_naming_it(tmp_path, data_run, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(data_run, run_dir)
    path = run_dir / "images" / "codes" / "c00001.safetensors"
    path.write_bytes(path.read_bytes()[:-7])  # truncated, as by a crash of a writer that was not atomic
    capsys.readouterr()
    assert main(train_args(run_dir)) == 2
    line, err = last_error_line(capsys)
    assert line == (f"ospo stage: error: code file {path} is corrupt (its hash differs from the manifest's); delete "
                    f"{run_dir / 'images'} and rerun the images stage (it regenerates the same codes)")
    assert "Traceback" not in err


# ------------------------------------------------------------------------------------------------ 5. concurrency
def test_lock_is_per_rank_and_refuses_a_second_holder(tmp_path):
    with lock_run_dir(tmp_path, 0), lock_run_dir(tmp_path, 1):  # two ranks of one run
        with pytest.raises(RunDirError) as e:
            with lock_run_dir(tmp_path, 0):
                pass
    assert str(e.value) == (f"{tmp_path} is in use by another ospo run (it holds the lock {tmp_path / '.lock'}); "
                            f"wait for that run to end, or use another run directory")
    with lock_run_dir(tmp_path, 0):  # released at the end of the block
        pass


def test_a_second_run_on_a_busy_run_dir_is_refused_and_the_first_is_undisturbed(tmp_path, capsys, cfg_file,
                                                                                 data_run):
    run_dir = write_upstream(tmp_path / "run")
    args = data_args(cfg_file, run_dir)
    with open(tmp_path / "err", "w") as err:
        first = subprocess.Popen([sys.executable, "-m", "ospo.cli", *args], env=ENV, stdout=subprocess.DEVNULL,
                                 stderr=err)
    try:
        deadline = time.monotonic() + 600
        while not (run_dir / "images" / "identity.json").exists():  # the first run is inside its stages
            assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "err").read_text()[-2000:]
            time.sleep(0.01)
        assert main(args) == 2
        still_running = first.poll() is None
        assert first.wait(timeout=600) == 0, (tmp_path / "err").read_text()[-2000:]
    finally:
        if first.poll() is None:
            first.kill()
    line, err = last_error_line(capsys)
    assert line == (f"ospo run: error: {run_dir} is in use by another ospo run (it holds the lock "
                    f"{run_dir / '.lock'}); wait for that run to end, or use another run directory")
    assert still_running and "Traceback" not in err
    assert_same_files(snapshot(run_dir), snapshot(data_run))


def test_atomic_files_get_the_mode_the_umask_gives_not_mkstemps_private_one(tmp_path):
    """Exported images and run files are read by scorers and tools running as other users: 0666 less the umask."""
    from ospo.artifacts import atomic_write_bytes

    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.png", b"x")
        os.umask(0o077)
        atomic_write_bytes(tmp_path / "b.png", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.png").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.png").stat().st_mode & 0o777 == 0o600


def test_a_file_system_without_flock_falls_back_to_posix_locks_and_without_either_says_so_in_one_line(
        tmp_path, monkeypatch):
    import errno
    import fcntl

    def no_lock(*args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_lock)
    with lock_run_dir(tmp_path, 0):  # POSIX record locks stand in
        pass
    monkeypatch.setattr(fcntl, "lockf", no_lock)
    with pytest.raises(RunDirError) as e:
        with lock_run_dir(tmp_path, 0):
            pass
    assert "supports neither flock nor POSIX locks (No locks available); set OSPO_RUN_LOCK=off" in str(e.value)
    assert len(str(e.value).splitlines()) == 1
    monkeypatch.setenv("OSPO_RUN_LOCK", "off")
    with lock_run_dir(tmp_path, 0):  # the user's explicit choice
        pass

"""Stages 2.3 (images) and 3.2 (score) on the tiny random Janus with hand-made upstream records."""

import shutil
import threading

import numpy as np
import pytest
import torch

from ospo.artifacts import ArtifactError, StageDir, load_codes
from ospo.config import load_config
from ospo.errors import InputError
from ospo.records import DensePair, QuestionSet, Rejected, Score
from ospo.sampling import ImageSampling, item_seed
from ospo.stages import RunContext
from ospo.stages import images as images_stage
from ospo.stages import score as score_stage

PAIRS = [DensePair("p0/n1", "p0", 1, "a red circle near a tree", "a blue circle near a tree"),
         DensePair("p0/n2", "p0", 2, "a red circle near a tree", "a red square near a tree"),
         DensePair("p1/n1", "p1", 1, "two cats left of a house", "two dogs left of a house")]
SETS = [QuestionSet("p0", "p0", "positive", "a red circle", ("is there a red circle ?", "is there a tree ?")),
        QuestionSet("p0/global", "p0", "positive", "a red circle", ("does this image show a red circle ?",),
                    kind="global"),
        QuestionSet("p0/n1", "p0", "negative", "a blue circle", ("is there a blue circle ?",)),
        QuestionSet("p0/n2", "p0", "negative", "a red square", ()),  # zero questions
        QuestionSet("p1", "p1", "positive", "two cats", ("are there two cats ?",))]
SAMPLING = ImageSampling(cfg_scale=3.0)


def write_stage(run_dir, name, records):
    stage = StageDir(run_dir, name)
    stage.write_part("c00000", records)
    stage.finish({"counts": {"in": len(records)}})


def make_ctx(run_dir, tiny_dir, model, rank=0, world_size=1):
    cfg = load_config(None, [f"model.path={tiny_dir}", "chunk_size=2", "images.cfg_scale=3.0"])
    return RunContext(run_dir, cfg, rank, world_size, progress=False, wait_timeout_s=120, _model=model)


def fresh_run(tmp_path, name="run"):
    run_dir = tmp_path / name
    write_stage(run_dir, "densify", PAIRS)
    return run_dir


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, tiny_dir, tiny):
    run_dir = fresh_run(tmp_path_factory.mktemp("images"))
    images_stage.run(make_ctx(run_dir, tiny_dir, tiny))
    return run_dir


def snapshot(run_dir):
    stage = StageDir(run_dir, "images")
    codes = {k: v for f in sorted((stage.path / "codes").glob("*.safetensors")) for k, v in load_codes(f).items()}
    return (stage.path / "records.jsonl").read_text(), codes


def test_both_images_of_a_pair_share_the_seed_and_stored_codes_are_the_sampled_ones(base_run, tiny):
    records = StageDir(base_run, "images").records()
    assert [r.id for r in records] == [f"{p.id}/{role}" for p in PAIRS for role in ("negative", "positive")]
    codes = images_stage.load_image_codes(base_run / "images")
    for pair in PAIRS:
        pos, neg = (next(r for r in records if r.id == f"{pair.id}/{role}") for role in ("positive", "negative"))
        assert pos.seed == neg.seed == item_seed(0, pair.id, 0)
        assert (pos.prompt, neg.prompt, pos.role, neg.prompt_id, neg.slot) == (
            pair.dense_positive, pair.dense_negative, "positive", pair.prompt_id, pair.slot)
        fresh = tiny.generate_image_tokens([pos.prompt, neg.prompt], [pos.seed, neg.seed], SAMPLING)
        assert np.array_equal(codes[pos.id], fresh.codes[0].numpy())
        assert np.array_equal(codes[neg.id], fresh.codes[1].numpy())
        with torch.no_grad():
            forced = tiny.image_token_logps([pos.prompt], torch.from_numpy(codes[pos.id][None].astype(np.int64)))
        assert pos.mean_logp == pytest.approx(float(forced.mean()), abs=1e-4)
    picture = images_stage.load_preview(base_run / "images", "p1/n1/negative")
    decoded = tiny.decode_images(torch.from_numpy(codes["p1/n1/negative"][None].astype(np.int64)))[0]
    # the PNG is the decoded codes: the stage decoded them in a batch, this in a batch of one, and on some CPUs
    # (AVX2-only oneDNN) the VQ decoder's convolutions round a few channel values differently by batch size, by one
    # level: seen on 0.01-0.02% of them
    diff = np.abs(np.asarray(picture).astype(int) - np.asarray(decoded).astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    manifest = StageDir(base_run, "images").manifest()
    assert manifest["counts"]["in"] == 3 and manifest["counts"]["out"] == 6
    assert sorted(manifest["codes_files"]) == ["c00000.safetensors", "c00001.safetensors"]


class CrashAfter:
    """The tiny model, but image generation raises after `calls` successful calls (a killed run)."""

    def __init__(self, model, calls):
        self.model, self.calls = model, calls

    def generate_image_tokens(self, *args, **kwargs):
        if self.calls == 0:
            raise RuntimeError("simulated crash")
        self.calls -= 1
        return self.model.generate_image_tokens(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.model, name)


def test_kill_and_resume_gives_identical_records_and_codes(base_run, tmp_path, tiny_dir, tiny):
    run_dir = fresh_run(tmp_path)
    with pytest.raises(RuntimeError, match="simulated crash"):
        images_stage.run(make_ctx(run_dir, tiny_dir, CrashAfter(tiny, 1)))
    stage = StageDir(run_dir, "images")
    assert not stage.complete and [p.name for p in stage.parts.glob("*.jsonl")] == ["c00000.jsonl"]
    counting = CrashAfter(tiny, 99)
    images_stage.run(make_ctx(run_dir, tiny_dir, counting))
    assert counting.calls == 98  # only the unfinished chunk was generated again
    (text, codes), (base_text, base_codes) = snapshot(run_dir), snapshot(base_run)
    assert text == base_text and codes.keys() == base_codes.keys()
    assert all(np.array_equal(codes[k], base_codes[k]) for k in codes)


def test_two_ranks_equal_one_rank(base_run, tmp_path, tiny_dir, tiny):
    run_dir = fresh_run(tmp_path)
    errors = []

    def rank1():
        try:
            images_stage.run(make_ctx(run_dir, tiny_dir, tiny, rank=1, world_size=2))
        except Exception as e:  # surfaced by the assert below
            errors.append(e)

    worker = threading.Thread(target=rank1)
    worker.start()
    images_stage.run(make_ctx(run_dir, tiny_dir, tiny, rank=0, world_size=2))
    worker.join(timeout=120)
    assert not errors and not worker.is_alive()
    (text, codes), (base_text, base_codes) = snapshot(run_dir), snapshot(base_run)
    assert text == base_text and all(np.array_equal(codes[k], base_codes[k]) for k in base_codes)


def test_corrupt_or_missing_code_files_give_an_error_naming_the_file(base_run, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(base_run, run_dir)
    path = run_dir / "images" / "codes" / "c00001.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # a flipped code byte: safetensors still parses, the hash does not match
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"c00001\.safetensors is corrupt"):
        images_stage.load_image_codes(run_dir / "images")
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(ArtifactError, match=r"c00001\.safetensors"):
        images_stage.load_image_codes(run_dir / "images")
    with pytest.raises(ArtifactError, match=r"c00001\.safetensors is corrupt"):
        load_codes(path)
    path.unlink()
    with pytest.raises(ArtifactError, match=r"c00001\.safetensors is missing"):
        images_stage.load_image_codes(run_dir / "images")


def test_score_stage_stores_per_question_answers_rejects_missing_and_stops_at_changed_previews(base_run, tmp_path, tiny_dir,
                                                                                 tiny):
    run_dir = tmp_path / "copy"
    shutil.copytree(base_run, run_dir)
    write_stage(run_dir, "questions", SETS)
    bad = images_stage.preview_path(StageDir(run_dir, "images"), "p0/n2/negative")
    good = bad.read_bytes()
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(InputError, match="p0__n2__negative.png"):
        images_stage.load_preview(run_dir / "images", "p0/n2/negative")
    ctx = make_ctx(run_dir, tiny_dir, tiny)
    with pytest.raises(ArtifactError, match=r"p0__n2__negative\.png changed after its stage finished"):
        score_stage.run(ctx)  # its record holds the hash of the PNG as written
    bad.write_bytes(good)
    shutil.rmtree(run_dir / "score")
    bad.unlink()  # a missing preview is refused as a record, with its reason
    ctx = make_ctx(run_dir, tiny_dir, tiny)
    manifest = score_stage.run(ctx)
    stage = StageDir(run_dir, "score")
    scores = {r.id: r for r in stage.records()}
    rejected = [r for r in stage.read_parts() if isinstance(r, Rejected)]
    assert [(r.id, r.reason) for r in rejected] == [("p0/n2/negative", "unreadable-preview")]
    assert manifest["counts"]["rejected_by_reason"] == {"unreadable-preview": 1}
    # positive images: local + global + every negative's set; negative images: the prompt's sets only
    assert sorted(k for k in scores if k.startswith("p0/n1/")) == [
        "p0/n1/negative@p0", "p0/n1/negative@p0/global",
        "p0/n1/positive@p0", "p0/n1/positive@p0/global", "p0/n1/positive@p0/n1", "p0/n1/positive@p0/n2"]
    assert scores["p0/n1/positive@p0/n2"].p_yes == ()  # zero-question set stored, S undefined
    picture = images_stage.load_preview(run_dir / "images", "p0/n1/positive")
    questions = [ctx.templates.vqa(q) for q in ("is there a red circle ?", "is there a tree ?",
                                                "does this image show a red circle ?", "is there a blue circle ?")]
    expected = tiny.yes_no_scores([picture], [questions])[0]
    got = scores["p0/n1/positive@p0"].p_yes + scores["p0/n1/positive@p0/global"].p_yes + \
        scores["p0/n1/positive@p0/n1"].p_yes
    assert got == pytest.approx(expected.p_yes.tolist(), abs=1e-5)
    assert scores["p0/n1/positive@p0"].p_no == pytest.approx(expected.p_no[:2].tolist(), abs=1e-5)
    assert manifest["counts"]["questions_asked"] == sum(len(s.p_yes) for s in scores.values())
    assert all(isinstance(s, Score) for s in scores.values())

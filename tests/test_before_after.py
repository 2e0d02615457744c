"""benchmarks.before_after: the README's picture."""

import numpy as np
import pytest


def test_the_picture_frames_each_tile_by_the_oracles_verdict(tmp_path, monkeypatch):
    from benchmarks import before_after

    run = tmp_path / "run"
    (run / "train-ospo-v2-abc" / "adapter").mkdir(parents=True)
    assert before_after.trained_adapter(run) == run / "train-ospo-v2-abc" / "adapter"
    calls = []

    def fake_tiles(model, records, images, seed, sampling):
        calls.append((len(records), images, seed, sampling.cfg_scale))
        return [[(np.full((128, 128, 3), 200, np.uint8), k % 2 == 0) for k in range(images)] for _ in records]

    monkeypatch.setattr(before_after, "tiles", fake_tiles)
    monkeypatch.setattr("ospo.model.JanusAdapter.from_pretrained", classmethod(
        lambda cls, path, adapter=None, **kw: type("M", (), {"default_cfg_scale": 3.0})()))
    out = tmp_path / "pic.png"
    before_after.main(["--run", str(run), "--out", str(out), "--images", "2"])
    from PIL import Image

    image = np.asarray(Image.open(out).convert("RGB"))
    assert calls == [(6, 2, 0, 3.0)] * 2  # one prompt per GenEval task, the checkpoint's own guidance
    frame_colours = {tuple(c) for c in image.reshape(-1, 3)}
    assert (40, 160, 60) in frame_colours and (200, 40, 40) in frame_colours


def test_a_run_without_exactly_one_trained_adapter_is_refused(tmp_path):
    from benchmarks import before_after

    with pytest.raises(SystemExit, match="expected one train-"):
        before_after.trained_adapter(tmp_path)

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ospo.artifacts import load_codes
from ospo.cli import main


def test_help_is_cheap():
    code = "import sys, ospo.cli as c; c.build_parser().format_help(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_generate_writes_pngs_codes_and_metadata(tiny_dir, tmp_path, capsys):
    out = tmp_path / "gen"
    rc = main(["generate", "--model", str(tiny_dir), "--prompt", "a red circle", "--prompt", "a dog",
               "--num-images", "2", "--seed", "7", "--cfg-scale", "3", "--out", str(out)])
    assert rc == 0
    rows = [json.loads(line) for line in (out / "images.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in rows] == [7, 8, 7, 8]
    assert [r["prompt"] for r in rows] == ["a red circle"] * 2 + ["a dog"] * 2
    codes = load_codes(out / "codes.safetensors")
    assert sorted(codes) == [r["id"] for r in rows]
    assert all(v.shape == (64,) for v in codes.values())
    assert Image.open(out / rows[0]["file"]).size == (64, 64)
    # the same prompt and seed give the same codes in a fresh run
    main(["generate", "--model", str(tiny_dir), "--prompt", "a red circle", "--seed", "7", "--cfg-scale", "3",
          "--out", str(tmp_path / "again")])
    assert np.array_equal(load_codes(tmp_path / "again" / "codes.safetensors")["00000"], codes["00000"])


def test_ask_prints_probabilities(tiny_dir, tmp_path, capsys):
    Image.new("RGB", (64, 64), "red").save(tmp_path / "x.png")
    rc = main(["ask", "--model", str(tiny_dir), "--image", str(tmp_path / "x.png"),
               "--question", "is there a red circle ?", "--question", "is there a dog ?"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and "p(yes)=" in lines[0] and "p(no)=" in lines[0]


@pytest.mark.parametrize("setup,args,message", [
    ("none", ["generate", "--model", "{tmp}/missing", "--prompt", "x", "--out", "{tmp}/o"], "does not exist"),
    ("empty-dir", ["generate", "--model", "{tmp}", "--prompt", "x", "--out", "{tmp}/o"], "no config.json"),
    ("model", ["generate", "--model", "{model}", "--prompt", " ", "--out", "{tmp}/o"], "--prompt is empty"),
    ("model", ["generate", "--model", "{model}", "--prompt", "x", "--cfg-scale", "0.5", "--out", "{tmp}/o"],
     "cfg_scale must be >= 1"),
    ("corrupt-png", ["ask", "--model", "{model}", "--image", "{tmp}/bad.png", "--question", "q"],
     "not a readable image"),
    ("corrupt-png", ["ask", "--model", "{model}", "--image", "{tmp}/bad.png", "--question", "  "],
     "--question is empty"),
])
def test_bad_input_gives_one_line_error(tiny_dir, tmp_path, capsys, setup, args, message):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    args = [a.format(tmp=tmp_path, model=tiny_dir) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_generate_samples_at_the_checkpoints_default_scale_unless_told(tiny_dir, tmp_path):
    """No --cfg-scale: the checkpoint's generation config's guidance_scale (as `ospo eval` and the demo)."""
    import shutil

    model = shutil.copytree(tiny_dir, tmp_path / "model")
    config = json.loads((model / "generation_config.json").read_text())
    (model / "generation_config.json").write_text(json.dumps({**config, "guidance_scale": 2.0}))
    codes = {}
    for name, flag in (("default", []), ("2", ["--cfg-scale", "2"]), ("5", ["--cfg-scale", "5"])):
        assert main(["generate", "--model", str(model), "--prompt", "a red circle", "--seed", "3", *flag,
                     "--out", str(tmp_path / name)]) == 0
        codes[name] = load_codes(tmp_path / name / "codes.safetensors")["00000"]
    assert np.array_equal(codes["default"], codes["2"]) and not np.array_equal(codes["default"], codes["5"])


def test_the_shipped_models_name_works_for_generate_and_samples_it_at_its_own_scale(tmp_path):
    """`--model shapeworld` (a name registered under `ospo.checkpoints`) loads the shipped model, and without
    --cfg-scale samples at its scale, 3, as `ospo eval shapeworld` and the demo do."""
    assert main(["generate", "--model", "shapeworld", "--prompt", "a red circle", "--seed", "1",
                 "--out", str(tmp_path / "named")]) == 0
    assert main(["generate", "--model", "shapeworld", "--prompt", "a red circle", "--seed", "1", "--cfg-scale", "3",
                 "--out", str(tmp_path / "three")]) == 0
    named = load_codes(tmp_path / "named" / "codes.safetensors")["00000"]
    assert np.array_equal(named, load_codes(tmp_path / "three" / "codes.safetensors")["00000"])
    assert (tmp_path / "named" / "images.jsonl").is_file()


def test_a_missing_model_path_names_the_registered_checkpoints(tmp_path, capsys):
    assert main(["generate", "--model", str(tmp_path / "nope"), "--prompt", "x", "--out", str(tmp_path / "o")]) == 2
    assert "named checkpoints: shapeworld" in capsys.readouterr().err

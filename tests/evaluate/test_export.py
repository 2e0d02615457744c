"""`ospo eval export`: the official scorer layouts, on the real prompt files, with the tiny random Janus."""

import contextlib
import io
import json
import os
import re
from pathlib import Path

import pytest
from PIL import Image

from ospo.cli import main
from ospo.errors import InputError
from ospo.evaluate import export

ROOT = Path(__file__).resolve().parents[2]
BENCH = next((p for p in (Path(os.environ.get("OSPO_BENCHMARKS", "/nonexistent")), ROOT / "shared" / "benchmarks",
                          Path("/work/shared/benchmarks")) if p.is_dir()), None)
pytestmark = pytest.mark.skipif(BENCH is None, reason="benchmark prompt files not found (set OSPO_BENCHMARKS to the "
                                                      "shared/benchmarks folder)")
GENEVAL = BENCH / "geneval" / "evaluation_metadata.jsonl" if BENCH else None
COMPBENCH = BENCH / "t2i_compbench" if BENCH else None
DPG = BENCH / "dpg_bench" / "prompts" if BENCH else None


# cfg 1 halves the work of the tests that do not check the defaults
COMPBENCH_ARGS = ["--category", "complex", "--limit", "2", "--images-per-prompt", "2", "--cfg-scale", "1"]


def run_export(tiny_dir, bench, prompts, out, *extra):
    return main(["eval", "export", bench, "--prompts", str(prompts), "--model", str(tiny_dir), "--batch-size", "8",
                 "--out", str(out), *extra])


def files(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def geneval_out(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("geneval")
    assert run_export(tiny_dir, "geneval", GENEVAL, out, "--limit", "2", "--images-per-prompt", "2") == 0
    return out


@pytest.fixture(scope="module")
def compbench_run(tiny_dir, tmp_path_factory):
    out, printed = tmp_path_factory.mktemp("compbench"), io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert run_export(tiny_dir, "t2i-compbench", COMPBENCH, out, *COMPBENCH_ARGS) == 0
    return out, printed.getvalue()


@pytest.fixture(scope="module")
def compbench_out(compbench_run):
    return compbench_run[0]


def test_geneval_layout_matches_the_evaluator(geneval_out):
    lines = GENEVAL.read_text().splitlines()
    folders = sorted(p.name for p in geneval_out.iterdir() if p.is_dir())
    assert folders == ["00000", "00001"]
    for i, name in enumerate(folders):
        meta = (geneval_out / name / "metadata.jsonl").read_text()
        assert json.loads(meta) == json.loads(lines[i]) and meta == json.dumps(json.loads(lines[i]))
        samples = sorted(p.name for p in (geneval_out / name / "samples").iterdir())
        assert samples == ["00000.png", "00001.png"] and all(re.match(r"\d+\.png", s) for s in samples)
        with Image.open(geneval_out / name / "samples" / "00000.png") as im:
            assert im.format == "PNG" and im.mode == "RGB"
    settings = json.loads((geneval_out / "export.json").read_text())  # a top-level file: not an all-digit folder
    assert settings["seed"] == 42 and settings["images_per_prompt"] == 2
    assert settings["sampling"]["cfg_scale"] == 5.0 and settings["sampling"]["temperature"] == 1.0


def test_compbench_layout_names_counts_and_order(compbench_run):
    compbench_out, printed = compbench_run
    assert sorted(p.name for p in compbench_out.iterdir()) == ["complex", "export.json"]  # nothing copied
    assert "complex_val_{spatial,action,spatialaction}.txt" in printed and "4 of 4 t2i-compbench files present" in printed
    assert sorted(p.name for p in (compbench_out / "complex").iterdir()) == ["samples"]
    lines = (COMPBENCH / "complex_val.txt").read_text().splitlines()
    names = [p.name for p in (compbench_out / "complex" / "samples").iterdir()]
    assert sorted(names) == sorted(f"{lines[i]}_{i * 2 + k:06d}.png" for i in range(2) for k in range(2))  # only these
    for name in names:
        assert name.count("_") == 1 and "\r" not in name
        prompt, number = name.split("_")[0], int(name.split("_")[1].split(".")[0])
        assert prompt == lines[number // 2]  # image k of line i is numbered i*K + k


def test_compbench_default_numbering_is_upstreams_i_times_10_plus_k():
    prompts = export.read_compbench(COMPBENCH / "spatial_val.txt")
    jobs = export.plan_jobs("t2i-compbench", prompts[:3], 10, 42)
    assert [j.path.split("_")[-1] for j in jobs[:11]] == [f"{n:06d}.png" for n in range(11)]
    assert jobs[13].path == f"spatial/samples/{prompts[1].text}_000013.png" and jobs[13].seeds == (45,)
    assert [j.seeds[0] for j in jobs[:10]] == list(range(42, 52))  # upstream's seeds 42..51


def test_compbench_reads_crlf_and_lf_files_like_splitlines():
    for category in ("color", "numeracy"):  # CRLF and LF files
        path = COMPBENCH / f"{category}_val.txt"
        prompts = export.read_compbench(path)
        assert [p.text for p in prompts] == path.read_text().splitlines() and len(prompts) == 300
        assert all("\r" not in p.text and p.group == category for p in prompts)
    picked = export.read_prompts("t2i-compbench", COMPBENCH, ["numeracy", "color"], limit=2)
    assert [(p.group, p.index) for p in picked] == [("numeracy", 0), ("numeracy", 1), ("color", 0), ("color", 1)]
    assert {p.group for p in export.read_compbench(COMPBENCH)} == set(export.COMPBENCH_CATEGORIES)


def test_scorer_commands_per_category(tmp_path):
    lines = "\n".join(export.scorer_commands("t2i-compbench", tmp_path, COMPBENCH, list(export.COMPBENCH_CATEGORIES),
                                              None, 10, True))
    out = tmp_path.resolve()
    for c in ("color", "shape", "texture", "complex"):
        assert f"python BLIP_vqa.py --out_dir={out}/{c}\n" in lines
    assert f"2D_spatial_eval.py --outpath={out}/spatial\n" in lines
    assert f"2D_spatial_eval.py --outpath={out}/complex --complex=True" in lines
    assert f"3D_spatial_eval.py --outpath={out}/3d_spatial\n" in lines  # no trailing slash
    assert f"numeracy_eval.py --outpath={out}/numeracy" in lines
    assert f"CLIP_similarity.py --outpath={out}/non_spatial\n" in lines
    assert f"3_in_1.py --outpath={out}/complex --data_path={COMPBENCH.resolve()}" in lines
    assert "complex_val_{spatial,action,spatialaction}.txt" in lines and "misaligned" not in lines
    assert "misaligned" in "".join(export.scorer_commands("t2i-compbench", tmp_path, COMPBENCH, ["complex"], None, 2,
                                                          True))


def test_dpg_writes_2x2_grids_of_the_four_seeded_images(tiny, tiny_dir, tmp_path, capsys):
    assert run_export(tiny_dir, "dpg-bench", DPG, tmp_path, "--limit", "2", "--cfg-scale", "1") == 0
    ids = sorted(p.stem for p in DPG.glob("*.txt"))[:2]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"{i}.png" for i in ids] + ["export.json"])
    with Image.open(tmp_path / f"{ids[0]}.png") as im:
        grid = im.convert("RGB")
    R = grid.size[0] // 2
    assert grid.size == (2 * R, 2 * R)
    assert f"dist_eval.sh {tmp_path.resolve()} {R}" in capsys.readouterr().out
    # cell k (TL, TR, BL, BR) is the image of seed 42 + k; checked for TL and BR
    from ospo.sampling import ImageSampling

    text = (DPG / f"{ids[0]}.txt").read_text().strip()
    codes = tiny.generate_image_tokens([text] * 2, [42, 45], ImageSampling(cfg_scale=1)).codes
    tl, br = (tiny.decode_images(row[None])[0] for row in codes)
    assert list(grid.crop((0, 0, R, R)).getdata()) == list(tl.getdata())
    assert list(grid.crop((R, R, 2 * R, 2 * R)).getdata()) == list(br.getdata())
    assert list(grid.crop((R, 0, 2 * R, R)).getdata()) != list(tl.getdata())


def test_grid_order_is_tl_tr_bl_br():
    cells = [Image.new("RGB", (2, 2), c) for c in ("red", "green", "blue", "white")]
    grid = export.grid_2x2(cells)
    assert [grid.getpixel(xy) for xy in [(0, 0), (3, 0), (0, 3), (3, 3)]] == [
        (255, 0, 0), (0, 128, 0), (0, 0, 255), (255, 255, 255)]


def test_resume_regenerates_only_the_missing_image(tiny_dir, geneval_out, tmp_path):
    out = tmp_path / "g"
    import shutil

    shutil.copytree(geneval_out, out)
    before = files(out)
    gone = out / "00001" / "samples" / "00001.png"
    gone.unlink()
    (gone.parent / ".00000.png.abc.tmp").write_bytes(b"left by a killed run")
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    assert run_export(tiny_dir, "geneval", GENEVAL, out, "--limit", "2", "--images-per-prompt", "2") == 0
    assert files(out) == before  # same bytes again, the stale temp file removed
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())


def test_resume_with_other_settings_is_refused(tiny_dir, geneval_out, tmp_path, capsys):
    import shutil

    shutil.copytree(geneval_out, tmp_path / "g")
    rc = run_export(tiny_dir, "geneval", GENEVAL, tmp_path / "g", "--limit", "2", "--images-per-prompt", "2",
                    "--cfg-scale", "3")
    assert rc == 2 and "exported with another sampling" in capsys.readouterr().err


def test_two_processes_equal_one(tiny_dir, compbench_out, tmp_path):
    assert run_export(tiny_dir, "t2i-compbench", COMPBENCH, tmp_path, *COMPBENCH_ARGS, "--num-processes", "2") == 0
    assert files(tmp_path) == files(compbench_out)


@pytest.mark.parametrize("setup, args, message", [
    (None, ["geneval", "--prompts", "{tmp}/missing.jsonl"], "prompt file {tmp}/missing.jsonl does not exist"),
    ("color_val.txt", ["t2i-compbench", "--prompts", "{tmp}/color_val.txt"], "contains '_'"),
    (None, ["t2i-compbench", "--prompts", str(COMPBENCH), "--category", "colour"],
     "unknown T2I-CompBench category 'colour' (did you mean 'color'?)"),
    ("dpg", ["dpg-bench", "--prompts", "{tmp}/dpg"], "may not contain '.'"),
    (None, ["dpg-bench", "--prompts", str(DPG), "--images-per-prompt", "2"], "must be 4"),
])
def test_bad_input_gives_one_line_error(tiny_dir, tmp_path, capsys, setup, args, message):
    if setup == "color_val.txt":
        (tmp_path / "color_val.txt").write_text("a red cup\r\na blue_green cup\r\n")
    if setup == "dpg":
        (tmp_path / "dpg").mkdir()
        (tmp_path / "dpg" / "a.b.txt").write_text("a dog")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(["eval", "export", *args, "--model", str(tiny_dir), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message.replace("{tmp}", str(tmp_path)) in err
    assert "Traceback" not in err


def test_category_must_match_a_single_prompt_file():
    with pytest.raises(InputError, match="does not match"):
        export.read_prompts("t2i-compbench", COMPBENCH / "shape_val.txt", ["color"])

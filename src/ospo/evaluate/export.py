"""Export generated images in the exact layouts the official GenEval, T2I-CompBench(++) and DPG-Bench scorers read
(see shared/docs/benchmarks.md for the rules each layout follows).

    geneval        <out>/<i:05d>/metadata.jsonl (line i of the metadata file) + <out>/<i:05d>/samples/<k:05d>.png
    t2i-compbench  <out>/<category>/samples/<prompt line>_<i*K+k:06d>.png   (K = 10 images per prompt by default)
    dpg-bench      <out>/<item_id>.png, a 2x2 grid (TL, TR, BL, BR) of four RxR images

Seed policy: image k of every prompt uses seed + k (T2I-CompBench upstream used 42..51, hence the default seed 42),
so an image never depends on batching or sharding. The settings go to <out>/export.json, outside every samples/.
Finished images are skipped, so rerunning the same command resumes; PNGs are written atomically.
"""

from __future__ import annotations

import difflib
import io
import json
import os
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path

from ospo import runtime
from ospo.artifacts import atomic_write_bytes, atomic_write_text, lines, prompt_rows
from ospo.errors import InputError
from ospo.registry import resolve_model_path

COMPBENCH_CATEGORIES = ("color", "shape", "texture", "spatial", "3d_spatial", "non_spatial", "numeracy", "complex")
DEFAULT_IMAGES_PER_PROMPT = {"geneval": 4, "t2i-compbench": 10, "dpg-bench": 4}
EXPORT_FILE = "export.json"
SEED_POLICY = "image k of every prompt uses seed + k"
# Settings a rerun into the same folder must share, or its images would mix two models / samplers.
SAME_ON_RESUME = ("benchmark", "model", "adapter", "dtype", "seed", "images_per_prompt", "sampling")


@dataclass(frozen=True)
class BenchPrompt:
    """One benchmark prompt. `index` is its position in its source (line i; sorted file i for DPG-Bench) and shards
    it: rank r of W exports the prompts with index % W == r. `group` is the T2I-CompBench category, `item_id` the
    DPG-Bench file stem, `metadata` the GenEval JSON line (json.dumps of it)."""

    index: int
    text: str
    group: str = ""
    item_id: str = ""
    metadata: str = ""


@dataclass(frozen=True)
class ExportJob:
    """One output file, relative to the export folder: one image, or a 2x2 grid of four (one seed per image)."""

    prompt: BenchPrompt
    path: str
    seeds: tuple[int, ...]


# ------------------------------------------------------------------------------------------------ reading prompts
def read_geneval(path: str | Path) -> list[BenchPrompt]:
    """evaluation_metadata.jsonl -> one prompt per line, its metadata kept as json.dumps of the line."""
    path = _existing_file(path, "evaluation_metadata.jsonl")
    rows = prompt_rows(path.read_text(encoding="utf-8"), str(path), "; is this GenEval's evaluation_metadata.jsonl?")
    return [BenchPrompt(n, row["prompt"], metadata=json.dumps(row)) for n, row in enumerate(rows)]


def read_compbench_file(path: str | Path, category: str) -> list[BenchPrompt]:
    """<category>_val.txt -> one prompt per line (split at "\n" alone, no CR; the text before a tab, as upstream reads it).
    Refuses prompts the scorers cannot read back from a file name: empty, or containing '_' or '/'."""
    path = _existing_file(path, f"{category}_val.txt")
    prompts = []
    for n, line in enumerate(lines(path.read_text(encoding="utf-8"))):
        text = line.split("\t")[0]
        where = f"{path.name} line {n + 1}"
        if not text.strip():
            raise InputError(f"{where} is empty; T2I-CompBench indexes images by line, remove the blank line")
        for bad in ("_", "/"):
            if bad in text:
                raise InputError(f"{where} contains {bad!r} ({text!r}); the T2I-CompBench scorers read the prompt "
                                 f"back from the file name split on '_', so it cannot be exported")
        if len(compbench_file_name(text, 0).encode()) > 255:
            raise InputError(f"{where} is too long for a file name ({len(text)} characters)")
        prompts.append(BenchPrompt(n, text, group=category))
    return prompts


def read_compbench(path: str | Path, categories: list[str] | None = None) -> list[BenchPrompt]:
    """A `<category>_val.txt` file, or the dataset folder holding them (then `categories`, default all 8)."""
    path = Path(path)
    for c in categories or []:
        if c not in COMPBENCH_CATEGORIES:
            close = difflib.get_close_matches(c, COMPBENCH_CATEGORIES, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise InputError(f"unknown T2I-CompBench category '{c}'{hint}; "
                             f"categories: {', '.join(COMPBENCH_CATEGORIES)}")
    if path.is_dir():
        return [p for c in categories or COMPBENCH_CATEGORIES for p in read_compbench_file(path / f"{c}_val.txt", c)]
    category = path.stem.removesuffix("_val")
    if category not in COMPBENCH_CATEGORIES or not path.name.endswith("_val.txt"):
        raise InputError(f"{path}: not a T2I-CompBench eval split; give one of "
                         f"{', '.join(c + '_val.txt' for c in COMPBENCH_CATEGORIES)} or the dataset folder")
    if categories and categories != [category]:
        raise InputError(f"--category {','.join(categories)} does not match the prompt file {path.name}")
    return read_compbench_file(path, category)


def read_dpg(path: str | Path) -> list[BenchPrompt]:
    """dpg_bench/prompts/ -> one prompt per <item_id>.txt, in sorted item-id order."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"DPG-Bench prompts folder {path} does not exist" if not path.exists() else
                         f"{path} is a file; give the dpg_bench/prompts folder of <item_id>.txt files")
    files = sorted(path.glob("*.txt"), key=lambda p: p.stem)
    if not files:
        raise InputError(f"{path} holds no <item_id>.txt files; give the dpg_bench/prompts folder")
    prompts = []
    for n, f in enumerate(files):
        if "." in f.stem:
            raise InputError(f"{f.name}: the DPG-Bench scorer keys images by the name before the first '.', so an "
                             f"item id may not contain '.'")
        text = f.read_text(encoding="utf-8").strip()
        if not text:
            raise InputError(f"{f} is empty")
        prompts.append(BenchPrompt(n, text, item_id=f.stem))
    return prompts


def read_prompts(benchmark: str, path: str | Path, categories: list[str] | None = None,
                 limit: int | None = None) -> list[BenchPrompt]:
    """The benchmark's prompts; `limit` keeps the first N (of every category for T2I-CompBench)."""
    if categories and benchmark != "t2i-compbench":
        raise InputError("--category applies to t2i-compbench only")
    if benchmark == "geneval":
        prompts = read_geneval(path)
    elif benchmark == "t2i-compbench":
        prompts = read_compbench(path, categories)
    else:
        prompts = read_dpg(path)
    if not prompts:
        raise InputError(f"{path}: no prompts in it; is it the {benchmark} prompt file?")
    return prompts if limit is None else [p for p in prompts if p.index < limit]


def _existing_file(path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"prompt file {path} does not exist" if not path.exists() else
                         f"{path} is a folder; give the {what} file")
    return path


# ------------------------------------------------------------------------------------------------ layout
def compbench_file_name(prompt: str, number: int) -> str:
    """'a green bench_000012.png': the scorers read the prompt as name.split('_')[0], the number as split('_')[1]."""
    return f"{prompt}_{number:06d}.png"


def plan_jobs(benchmark: str, prompts: list[BenchPrompt], images_per_prompt: int, seed: int) -> list[ExportJob]:
    """Every output file of the export, with its seeds (image k of a prompt: seed + k). T2I-CompBench numbers
    image k of line i as i*K + k: contiguous from 0, and upstream's i*10 + k at the default K = 10."""
    K = images_per_prompt
    if benchmark == "dpg-bench":
        if K != 4:
            raise InputError(f"DPG-Bench images are 2x2 grids of 4; --images-per-prompt must be 4, got {K}")
        return [ExportJob(p, f"{p.item_id}.png", tuple(seed + k for k in range(4))) for p in prompts]
    if benchmark == "geneval":
        return [ExportJob(p, f"{p.index:05d}/samples/{k:05d}.png", (seed + k,)) for p in prompts for k in range(K)]
    return [ExportJob(p, f"{p.group}/samples/{compbench_file_name(p.text, p.index * K + k)}", (seed + k,))
            for p in prompts for k in range(K)]


def grid_2x2(images: list):
    """Four RxR images -> one 2Rx2R image, in the order DPG-Bench crops them: TL, TR, BL, BR."""
    from PIL import Image

    if len(images) != 4 or len({im.size for im in images}) != 1 or images[0].size[0] != images[0].size[1]:
        raise InputError(f"a DPG-Bench grid needs 4 square images of one size, got {[im.size for im in images]}")
    R = images[0].size[0]
    grid = Image.new("RGB", (2 * R, 2 * R))
    for k, im in enumerate(images):
        grid.paste(im, ((k % 2) * R, (k // 2) * R))
    return grid


def png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def claim_export_dir(out: Path, settings: dict) -> None:
    """Writes export.json into a new folder, or checks a rerun's settings against it (resume must not mix)."""
    path = out / EXPORT_FILE
    if path.is_file():
        old = json.loads(path.read_text())
        differ = [k for k in SAME_ON_RESUME if old.get(k) != settings.get(k)]
        if differ:
            raise InputError(f"{out} was exported with another {', '.join(differ)} (see {path}); use a new --out")
        return
    atomic_write_text(path, json.dumps(settings, indent=1) + "\n")


def write_geneval_metadata(out: Path, prompt: BenchPrompt) -> None:
    path = out / f"{prompt.index:05d}" / "metadata.jsonl"
    if not path.exists():
        atomic_write_text(path, prompt.metadata)  # json.load reads one object; upstream writes no newline either
    elif path.read_text(encoding="utf-8") != prompt.metadata:
        raise InputError(f"{path} holds another prompt than line {prompt.index + 1} of this prompt file; "
                         f"use a new --out")


def remove_stale_temp_files(out: Path, jobs: list[ExportJob]) -> int:
    """Deletes the temporary files (atomic_write_bytes' `.<name>.*.tmp`) a killed run left beside its PNGs, since
    samples/ must hold nothing else. Call only when no process is writing."""
    stale = [t for d in {(out / j.path).parent for j in jobs} if d.is_dir() for t in d.glob(".*.png.*.tmp")]
    for t in stale:
        t.unlink()
    return len(stale)


# ------------------------------------------------------------------------------------------------ generation
def export_images(model, benchmark: str, jobs: list[ExportJob], out: Path, sampling, rank: int = 0, world_size: int = 1,
                  progress: bool = False) -> int:
    """Generates and writes this rank's missing files (prompt index % world_size == rank); returns how many images
    it generated. Batches hold up to model.batch_size images; each image's draws come from its own seed, so the
    bytes written do not depend on batching, sharding or resuming."""
    from tqdm import tqdm

    mine = [j for j in jobs if j.prompt.index % world_size == rank]
    if benchmark == "geneval":
        for p in {j.prompt.index: j.prompt for j in mine}.values():
            write_geneval_metadata(out, p)
    todo = [j for j in mine if not (out / j.path).exists()]
    bar = tqdm(total=sum(len(j.seeds) for j in todo), desc=f"export {benchmark}", unit="img", disable=not progress)
    generated = 0
    batch_size = max(1, model.batch_size // max(len(j.seeds) for j in todo)) if todo else 1
    for start in range(0, len(todo), batch_size):
        batch = todo[start:start + batch_size]
        texts = [j.prompt.text for j in batch for _ in j.seeds]
        tokens = model.generate_image_tokens(texts, [s for j in batch for s in j.seeds], sampling)
        # decoded one by one: a batched VQ decode can round a pixel differently with the batch size
        images = iter(im for row in tokens.codes for im in model.decode_images(row[None]))
        for job in batch:
            cells = [next(images) for _ in job.seeds]
            atomic_write_bytes(out / job.path, png_bytes(grid_2x2(cells) if benchmark == "dpg-bench" else cells[0]))
        generated += len(texts)
        bar.update(len(texts))
    bar.close()
    return generated


# ------------------------------------------------------------------------------------------------ scorer commands
def scorer_commands(benchmark: str, out: Path, prompts_path: Path, categories: list[str], resolution: int | None,
                    images_per_prompt: int, complete_set: bool) -> list[str]:
    """The official commands to run next (absolute paths; `$GENEVAL` etc. = a checkout of the scorer's repo)."""
    out = out.resolve()
    q = shlex.quote
    if benchmark == "geneval":
        return ["# in a checkout of djghosh13/geneval ($GENEVAL), detector from evaluation/download_models.sh:",
                f'cd "$GENEVAL" && python evaluation/evaluate_images.py {q(str(out))} '
                f'--outfile {q(str(out / "results.jsonl"))} --model-path "$GENEVAL_DETECTOR_DIR"',
                f'cd "$GENEVAL" && python evaluation/summary_scores.py {q(str(out / "results.jsonl"))}']
    if benchmark == "dpg-bench":
        return ["# in a checkout of TencentQQGYLab/ELLA ($ELLA); it needs dpg_bench/dpg_bench.csv (not shipped here).",
                f"# The scorer tries every file in the folder: it reports {EXPORT_FILE} as failed and skips it.",
                f'cd "$ELLA" && bash dpg_bench/dist_eval.sh {q(str(out))} {resolution or "<R>"}']
    lines = ["# in a checkout of Karine-Huang/T2I-CompBench ($T2I_COMPBENCH); --outpath without a trailing slash:"]
    data_dir = (prompts_path if prompts_path.is_dir() else prompts_path.parent).resolve()
    for c in categories:
        cat = q(str(out / c))
        if c in ("color", "shape", "texture", "complex"):
            lines.append(f'cd "$T2I_COMPBENCH/BLIPvqa_eval" && python BLIP_vqa.py --out_dir={cat}')
        if c == "spatial" or c == "complex":
            flag = " --complex=True" if c == "complex" else ""
            lines.append(f'cd "$T2I_COMPBENCH/UniDet_eval" && python 2D_spatial_eval.py --outpath={cat}{flag}')
        if c == "3d_spatial":
            lines.append(f'cd "$T2I_COMPBENCH/UniDet_eval" && python 3D_spatial_eval.py --outpath={cat}')
        if c == "numeracy":
            lines.append(f'cd "$T2I_COMPBENCH/UniDet_eval" && python numeracy_eval.py --outpath={cat}')
        if c == "non_spatial" or c == "complex":
            flag = " --complex=True" if c == "complex" else ""
            lines.append(f'cd "$T2I_COMPBENCH" && python CLIPScore_eval/CLIP_similarity.py --outpath={cat}{flag}')
        if c == "complex":
            lines.append(f'cd "$T2I_COMPBENCH/3_in_1_eval" && python 3_in_1.py --outpath={cat} '
                         f'--data_path={q(str(data_dir))}')
            missing = [f for f in ("complex_val.txt", "complex_val_spatial.txt", "complex_val_action.txt",
                                   "complex_val_spatialaction.txt") if not (data_dir / f).is_file()]
            lines.append("# note: 3_in_1.py reads complex_val.txt and complex_val_{spatial,action,spatialaction}.txt "
                         "from --data_path" + (f"; {data_dir} lacks {', '.join(missing)}" if missing else ""))
            if images_per_prompt != 10 or not complete_set:
                lines.append("# note: 3_in_1.py assumes all 300 complex_val lines with 10 images each; this export "
                             "is not that, so its 3-in-1 score would be misaligned")
    return lines


# ------------------------------------------------------------------------------------------------ shell
def export_command(args, load_model) -> int:
    """`ospo eval export`: checks the inputs, spawns --num-processes workers (or runs as one rank), writes, and
    prints the scorer commands. `load_model(args)` loads the adapter from the CLI's model options."""
    from ospo.pipeline import spawn_workers
    from ospo.sampling import ImageSampling

    bench = args.benchmark
    K = DEFAULT_IMAGES_PER_PROMPT[bench] if args.images_per_prompt is None else args.images_per_prompt
    if K < 1 or (args.limit is not None and args.limit < 1) or args.num_processes < 1:
        raise InputError("--images-per-prompt, --limit and --num-processes must be >= 1")
    categories = [c.strip() for item in args.category or [] for c in item.split(",") if c.strip()] or None
    sampling = ImageSampling(cfg_scale=args.cfg_scale, temperature=args.temperature)
    prompts = read_prompts(bench, args.prompts, categories, args.limit)
    jobs = plan_jobs(bench, prompts, K, args.seed)
    worker = "OSPO_RANK" in os.environ
    procs = runtime.processes()
    rank, world = procs.rank, procs.world_size
    if args.num_processes > 1 and world > 1 and not worker:
        raise InputError("--num-processes and a distributed launcher (WORLD_SIZE > 1) both shard; use one of them")
    args.device = runtime.device(args.device, procs)
    args.dtype = runtime.dtype(args.dtype, args.device)
    args.model = resolve_model_path(args.model)  # a registered name records (and loads) the checkpoint it stands for
    model_path = Path(args.model).resolve() if Path(args.model).exists() else args.model
    adapter = args.adapter and str(Path(args.adapter).resolve())
    settings = {"benchmark": bench, "model": str(model_path), "adapter": adapter, "dtype": args.dtype,
                "seed": args.seed, "seed_policy": SEED_POLICY, "images_per_prompt": K, "sampling": asdict(sampling)}
    out = Path(args.out)
    claim_export_dir(out, settings)
    if args.num_processes > 1 and not worker:
        rc = spawn_workers(args.argv, args.num_processes)
        if rc:
            return rc
    else:
        export_images(load_model(args), bench, jobs, out, sampling, rank, world, progress=rank == 0)
    if world > 1 and (worker or rank != 0):
        return 0  # the parent (or rank 0 of a launcher) reports
    if world == 1:
        remove_stale_temp_files(out, jobs)
    missing = sum(not (out / j.path).exists() for j in jobs)
    print(f"{out}: {len(jobs) - missing} of {len(jobs)} {bench} files present"
          + (f"; {missing} missing: rerun the same command" if missing else "")
          + ("" if world == 1 else " (other ranks may still be running)"))
    resolution = _grid_cell_size(out, jobs) if bench == "dpg-bench" else None
    groups = sorted({p.group for p in prompts}, key=COMPBENCH_CATEGORIES.index) if bench == "t2i-compbench" else []
    print("\n".join(scorer_commands(bench, out, Path(args.prompts), groups, resolution, K, args.limit is None)))
    return 0


def _grid_cell_size(out: Path, jobs: list[ExportJob]) -> int | None:
    from PIL import Image

    for j in jobs:
        if (out / j.path).exists():
            with Image.open(out / j.path) as im:
                return im.size[0] // 2
    return None

"""OSPO-v2 training-step throughput and peak memory against the public research code's data path, one model at a time.

Every variant runs the same optimizer step as `ospo.training.train` (without accelerate, logging and
checkpoints): for each micro-batch one forward of [x; y_w], [x; y_l], [x~; y_w] through `ImageLogps`, the
SimPO + CoPO + SFT `objective` of the ospo-v2 defaults, backward; then clip and AdamW, LoRA from `prepare_model`.
The variants differ only in where the image codes come from and in gradient checkpointing:

- `stored codes` (ours): the sampled code ids kept from generation are indexed directly;
- `re-encode PNG` (the public OSPO code, KU-AGI/OSPO `ospo/dataclass/train_dataset_v2.py` + its trainer):
  the images are decoded to PNG bytes once up front; every step opens the PNGs of its pairs with PIL, runs the
  image processor and the VQ *encoder* (`janus.model.vqmodel.encode(...).image_tokens`, under no_grad) to get
  the codes, then the same forward/backward. The PNGs stay in memory (no disk reads: generous to the baseline);
- `stored codes + grad ckpt`: ours with `TrainConfig(gradient_checkpointing=True)`.

Memory. `tracemalloc` does not see torch's allocations, so each variant runs in a fresh subprocess and reads the
kernel's accounting of that process: once the model and data are loaded (and, for the baseline, the PNGs
made), the peak-RSS counter is reset (`/proc/self/clear_refs` = 5, which also resets
`getrusage(RUSAGE_SELF).ru_maxrss`) and the current RSS noted; after the warm-up and timed steps `ru_maxrss` is
the peak. `peak MiB` is that whole-process peak (Python, torch and the weights included); `train MiB` is the
peak above the loaded state: gradients, AdamW state, activations and temporaries of the steps, which is what
gradient checkpointing and the data path change. RSS also counts freed memory the C allocator keeps, so it is an
upper bound on live tensors. Where clear_refs cannot be written the counter is not reset and the report says so.
On CUDA the same two numbers come from `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats`.

Time. Rates are from the fastest of the timed steps (the steps are alike; interference only slows one down).
On CPU the speed-ups are ratios of *process CPU time* (`time.process_time`, all threads), wall time beside it:
on a shared machine a niced benchmark gets a varying share of the cores, which moves wall time by several x
between variants run minutes apart, while the CPU time a step consumes moves much less. The default is 1
thread, because idle OpenMP threads spin-wait (and burn CPU time) while a sibling is descheduled. On CUDA the
speed-ups are ratios of wall time.

Models: the tiny test Janus and the ~50M-parameter random Janus of `benchmarks.adapter_speed` (16384 codes,
256 image tokens), or a saved checkpoint directory (e.g. `--models src/ospo/shapeworld/checkpoint`). Codes are
drawn at random (the step's cost does not depend on their values).

    python -m benchmarks.training_speed [--models tiny,50m] [--pairs 2] [--micro-batch 2] [--steps N] [--json out.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from benchmarks.adapter_speed import PROMPTS, SPECS

VARIANTS = {  # name -> (codes from PNG each step, gradient checkpointing)
    "stored codes": (False, False),
    "re-encode PNG": (True, False),
    "stored codes + grad ckpt": (False, True),
}
DEFAULT_STEPS = {"tiny": 10, "50m": 3}
NEGATIVE_PROMPTS = ["a blue circle left of a red square", "three green cats", "a yellow star below a black dog",
                    "a purple triangle and an orange flower on the right"]


def make_pairs(num_pairs: int, num_image_tokens: int, codebook_size: int, seed: int = 0):
    """PairData with random chosen/rejected codes; every pair has a negative prompt (so CoPO runs on all rows)."""
    from ospo.training import PairData

    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, codebook_size, (2, num_pairs, num_image_tokens), generator=g)
    return PairData(ids=[f"pair-{i}" for i in range(num_pairs)],
                    prompts=[PROMPTS[i % len(PROMPTS)] for i in range(num_pairs)],
                    negative_prompts=[NEGATIVE_PROMPTS[i % len(NEGATIVE_PROMPTS)] for i in range(num_pairs)],
                    chosen=codes[0], rejected=codes[1])


def png_bytes(adapter, codes: torch.Tensor) -> list[bytes]:
    """Decodes (B, N) codes to images and PNG-encodes them, as the research code stores its pairs."""
    out = []
    for image in adapter.decode_images(codes):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


@torch.no_grad()
def encode_pngs(adapter, pngs: list[bytes]) -> torch.Tensor:
    """The research code's per-step path: PNG -> PIL -> image processor -> VQ encoder -> (B, N) codes."""
    from PIL import Image

    janus = adapter.janus
    images = [Image.open(io.BytesIO(b)).convert("RGB") for b in pngs]
    pixels = adapter.processor.image_processor(images, return_tensors="pt")["pixel_values"]
    out = janus.model.vqmodel.encode(pixels.to(adapter.device, janus.dtype))
    return out.image_tokens.view(len(pngs), -1)  # (B, N)


def make_step(adapter, cfg, data, pngs=None, seed: int = 0):
    """Returns step(s) -> list of (rows, sequence length) forwarded: one optimizer step over batch s of `data`.
    With `pngs` = (chosen, rejected) PNG lists the codes are re-encoded from the PNGs at every step."""
    from ospo.training import ImageLogps, PairData, batch_rows, micro_batch, objective, prepare_model

    params = prepare_model(adapter, cfg, seed)
    module = ImageLogps(adapter)
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2))
    device = adapter.device
    bf16 = device.type == "cuda"
    accum = cfg.batch_size // cfg.micro_batch_size
    adapter.model.train()

    def step(s: int) -> list[tuple[int, int]]:
        rows = batch_rows(seed, len(data), s, cfg.batch_size)
        shapes = []
        for k in range(accum):
            micro = rows[k * cfg.micro_batch_size:(k + 1) * cfg.micro_batch_size]
            view, idx = data, micro
            if pngs is not None:
                view = PairData(ids=[data.ids[i] for i in micro], prompts=[data.prompts[i] for i in micro],
                                negative_prompts=[data.negative_prompts[i] for i in micro],
                                chosen=encode_pngs(adapter, [pngs[0][i] for i in micro]).cpu(),
                                rejected=encode_pngs(adapter, [pngs[1][i] for i in micro]).cpu())
                idx = np.arange(len(micro))
            prompts, codes, batch = micro_batch(view, idx, device)
            ids, mask = adapter.image_prompt_ids(prompts)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                token_logps, _ = module(ids, mask, codes)  # (3b, N)
            b = len(micro)
            logps = {"chosen": token_logps[:b], "rejected": token_logps[b:2 * b], "negative": token_logps[2 * b:]}
            losses, _ = objective(cfg, logps, batch)
            (losses.sum() / cfg.batch_size).backward()
            shapes.append((ids.shape[0], ids.shape[1] + codes.shape[1]))
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return shapes

    return step


# ------------------------------------------------------------------------------------------------ memory
def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def reset_peak(device: torch.device) -> tuple[int, bool]:
    """Resets the peak counter; returns (bytes in use now, whether the reset worked)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated(), True
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        reset = False
    return _rss_kib() * 1024, reset


def peak_bytes(device: torch.device) -> int:
    import resource

    if device.type == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


# ------------------------------------------------------------------------------------------------ one variant
def run_variant(model_dir: str, variant: str, pairs: int, micro_batch: int, steps: int, device: str,
                threads: int) -> dict:
    """Runs in its own process: builds the model, one warm-up step, then `steps` timed steps."""
    from ospo.config import TrainConfig
    from ospo.model import JanusAdapter

    torch.set_num_threads(threads)
    reencode, checkpointing = VARIANTS[variant]
    adapter = JanusAdapter.from_pretrained(model_dir, device=device)
    cfg = TrainConfig(batch_size=pairs, micro_batch_size=micro_batch, gradient_checkpointing=checkpointing)
    data = make_pairs(pairs, adapter.num_image_tokens, adapter.codebook_size)
    pngs = (png_bytes(adapter, data.chosen), png_bytes(adapter, data.rejected)) if reencode else None
    step = make_step(adapter, cfg, data, pngs)
    dev = adapter.device
    before, reset = reset_peak(dev)
    step(0)  # warm-up, not timed: the first step allocates gradients and optimizer state
    wall, cpu = [], []
    for s in range(1, steps + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        step(s)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    peak = peak_bytes(dev)
    return {"variant": variant, "pairs_per_s": pairs / min(wall), "pairs_per_cpu_s": pairs / min(cpu),
            "wall_s": wall, "cpu_s": cpu, "peak_mib": peak / 2**20, "train_mib": (peak - before) / 2**20,
            "peak_reset": reset}


def run_in_subprocess(model_dir: str, variant: str, steps: int, args) -> dict:
    job = {"model_dir": model_dir, "variant": variant, "pairs": args.pairs, "micro_batch": args.micro_batch,
           "steps": steps, "device": args.device, "threads": args.threads}
    out = subprocess.run([sys.executable, "-m", "benchmarks.training_speed", "--worker", json.dumps(job)],
                         capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"variant '{variant}' failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="tiny,50m")
    ap.add_argument("--pairs", type=int, default=2, help="pairs per optimizer step")
    ap.add_argument("--micro-batch", type=int, default=2, help="pairs per forward")
    ap.add_argument("--steps", type=int, default=None,
                    help="timed optimizer steps after one warm-up step (default: tiny 10, 50m 3)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.worker:
        print(json.dumps(run_variant(**json.loads(args.worker))))
        return
    from ospo.tiny import save_tiny_janus

    report = {"torch": torch.__version__, "threads": args.threads, "device": args.device, "pairs": args.pairs,
              "micro_batch": args.micro_batch, "models": {}}
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory() as d:
            if name in SPECS:
                save_tiny_janus(d, SPECS[name])
            else:  # a saved checkpoint, e.g. the shipped ShapeWorld model
                d = name
            steps = args.steps or DEFAULT_STEPS.get(name, 5)
            rows = [run_in_subprocess(d, v, steps, args) for v in VARIANTS]
            with open(os.path.join(d, "config.json")) as f:
                cfg = json.load(f)
        rate = "pairs_per_s" if args.device != "cpu" else "pairs_per_cpu_s"
        base = next(r for r in rows if r["variant"] == "re-encode PNG")
        ours = next(r for r in rows if r["variant"] == "stored codes")
        for r in rows:
            r["speedup_vs_reencode"] = r[rate] / base[rate]
            r["train_memory_vs_stored"] = r["train_mib"] / ours["train_mib"]
        report["models"][name] = {"steps": steps, "variants": rows}
        shape = (f"LM {cfg['text_config']['hidden_size']} wide x {cfg['text_config']['num_hidden_layers']} layers, "
                 f"{cfg['vision_config']['num_image_tokens']} image tokens, {cfg['vq_config']['num_embeddings']} codes")
        print(f"\n## {name}: {shape}; {steps} steps of {args.pairs} pairs, micro-batch {args.micro_batch}, "
              f"LoRA r=32, {args.threads} thread(s), {args.device}; speed-up from {rate.replace('_', ' ')}")
        print("| codes from | grad ckpt | pairs/s (wall) | pairs/CPU-s | speed-up vs re-encode | peak MiB | train MiB "
              "| train MiB vs ours |\n|---|---|---|---|---|---|---|---|")
        for r in rows:
            src, ckpt = ("PNG -> VQ encoder each step" if VARIANTS[r["variant"]][0] else "stored ids",
                         "on" if VARIANTS[r["variant"]][1] else "off")
            print(f"| {src} | {ckpt} | {r['pairs_per_s']:.3f} | {r['pairs_per_cpu_s']:.3f} | "
                  f"{r['speedup_vs_reencode']:.2f}x | {r['peak_mib']:.0f} | {r['train_mib']:.1f} | "
                  f"{r['train_memory_vs_stored']:.2f}x |")
        if not all(r["peak_reset"] for r in rows):
            print("(peak RSS counter could not be reset: peaks include model loading)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()

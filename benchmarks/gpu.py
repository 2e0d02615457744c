"""Every stage's speed at Janus-Pro size on one CUDA GPU, in one process: the device check of issue 7.

Randomly initialised Janus-Pro-7B / -1B (`benchmarks.janus_pro`, bf16, 384 px, 576 image tokens, 16384 codes).
For each model, each section against its baseline on the same model and inputs:

- ceilings: a large bf16 `torch.mm` (FLOP/s) and a device-to-device copy (bytes read + written per second);
- generation with CFG 5: images/s at each batch (our batched loop, preallocated KV cache) against one image at
  a time with a fresh DynamicCache (the public code's loop), and our loop with the DynamicCache, with a ready 4-D
  decode mask, or with static step shapes (`ospo.static_decode`) run eagerly or replayed as CUDA graphs
  (`--variants`; the static rows also give their share of codes identical to ours); peak memory;
  the fraction of the matmul ceiling (`benchmarks.efficiency.generation_flops`) and of the bandwidth floor: every
  decode step reads the LM, head and aligner weights once and each row's KV cache so far;
- self-VQA: questions/s, prefix-shared against one full forward per question, at 3/6/10 questions per image;
- training (ospo-v2, LoRA r=32 on the LM, bf16 autocast): pairs/s and peak memory with stored codes against
  re-encoding PNGs through the VQ encoder each step, and with gradient checkpointing; fraction of the ceiling
  (`benchmarks.efficiency.training_flops`);
- profile (before training, which leaves LoRA layers on the model): torch.profiler over a short generation (its
  image-token count cut to `--profile-tokens`) at the smallest and the largest batch: the share of wall time the
  GPU's kernels run, and the top operators.

First calls. On an H200 (torch 2.11, cu130, Janus-Pro-7B), a generation at a batch size not yet seen in the
process took 37-39 s at batch 16, 64 and 128 alike (run 1, 2-D mask), and 36.0 s at batch 128 in run 3 (4-D mask).
The 2-D-mask variant then ran the same batch-128 shapes in 14.9 s. Every decode step attends over a new key
length, and a padded batch takes PyTorch's cuDNN attention, which builds a plan per new shape. That is the likely
cause, not yet isolated (`--no-cudnn-sdpa` turns that backend off for the check), and in run 3 it is confounded
with the mask. A run of OSPO repeats its batch shapes thousands of times, so rows report the fastest repeat and
keep the first call's time beside it; the warm-up before the first row only loads kernels. First-call times
are comparable only between rows whose shapes no earlier row ran. The 'graphs' rows capture their 9-10 graphs
anew in every call (one eager step, a synchronize and a capture each), and the timing includes that.

Sections run in the order listed (training last, whatever `--sections` says: it leaves LoRA layers on the
model). The JSON records the checkout's commit and is rewritten after each section (generation: after each
row), so a run cut short keeps what it finished. `--deadline` (seconds) skips every row and section that would
start after it.

    python -m benchmarks.gpu --arch 7b,1b --json out.json          (CUDA)
    python -m benchmarks.gpu --arch mini --device cpu --batches 1,4   (the dry run: every code path on the CPU)
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from benchmarks.adapter_speed import PROMPTS, QUESTIONS
from benchmarks.efficiency import elapsed, generation_flops, matmul_peak, model_shapes, training_flops
from benchmarks.training_speed import peak_bytes, reset_peak

SECTIONS = ("generation", "vqa", "profile", "training")
DEFAULT_BATCHES = {"7b": "1,16,64,128", "1b": "1,16,64,256", "mini": "1,4"}


def _commit() -> str | None:
    """The checkout's commit, '+dirty' when files differ from it (None where there is no git)."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def peak_gib(device) -> float:
    """Peak memory since the last `reset_peak`: CUDA allocations, or the process's peak RSS on the CPU."""
    return peak_bytes(device) / 2**30


def ceilings(device, n: int) -> dict:
    """Best of 10 after a warm-up: bf16 n^3 matmul FLOP/s (`efficiency.matmul_peak`) and copy bytes/s (read +
    write) on random data."""
    src = torch.randn(256 * 2**20, device=device)  # 1 GiB of fp32
    dst = torch.empty_like(src)
    dst.copy_(src)
    copy_s = min(elapsed(device, lambda: dst.copy_(src))[0] for _ in range(10))
    return {"matmul_n": n, "matmul_flops_per_s": matmul_peak(device, torch.bfloat16, n, repeat=10),
            "copy_bytes_per_s": 2 * src.numel() * 4 / copy_s}


def decode_bytes(adapter, rows: int, P: int, N: int) -> float:
    """Fewest bytes a guided generation moves: per decode step the LM/head/aligner weights once (bf16) and every
    row's K and V so far; the prefill reads the weights once."""
    s = model_shapes(adapter.janus)
    weights = 2 * (s.W + s.H + s.A)
    kv = 2 * 2 * s.L * s.d * rows * sum(P + t for t in range(N))  # K and V, bf16
    return float(N * weights + kv)


GENERATION_VARIANTS = {  # name -> (method, preallocated cache, sync-free 4-D decode mask, static decode, graphs)
    "one-at-a-time": ("one-at-a-time (fresh DynamicCache)", False, False, False, False),
    "dynamic": ("ours, DynamicCache", False, False, False, False),
    "4d-mask": ("ours, ready 4-D mask (no host sync per token)", True, True, False, False),
    "ours": ("ours (batched, preallocated cache)", True, False, False, False),
    "static": ("static step shapes, eager (ospo.static_decode)", True, False, True, False),
    "graphs": ("static step shapes, one CUDA graph per 64-key bucket", True, False, True, True),
}
PER_BATCH = ("ours", "graphs")  # variants run at every batch; the others at the largest
SWITCHES = ("preallocate_cache", "sync_free_decode", "static_decode", "cuda_graphs", "batch_size")


# one function: its nested run/attempt share the adapter's saved switches and the codes each variant drew
def bench_generation(adapter, batches, baseline_images, peak, bandwidth, variants, repeats=2,
                     on_row=lambda rows: None, past_deadline=lambda: False) -> list[dict]:
    """Rows in the order of `variants`: 'ours' and 'graphs' at every batch, the others at the largest batch,
    'one-at-a-time' over `baseline_images` images. Each row runs `repeats` times and reports the fastest call
    after the first (the first call with new shapes is slow on a GPU: see the module docstring); the first
    call's time is kept beside it. `on_row(rows)` runs after each row (the caller saves)."""
    from ospo.sampling import ImageSampling

    sampling, dev, N = ImageSampling(cfg_scale=5.0), adapter.device, adapter.num_image_tokens
    batch_size, adapter.batch_size, adapter.num_image_tokens = adapter.batch_size, 1, 8
    try:
        adapter.generate_image_tokens(PROMPTS[:1], [0], sampling)  # warm-up: kernels, allocator (8 tokens)
    finally:
        adapter.batch_size, adapter.num_image_tokens = batch_size, N
    shapes, rows = model_shapes(adapter.janus), []

    drawn = {}  # (variant, batch) -> the last call's ImageTokens: the static variants are compared with ours

    def run(variant, b, count):
        method, prealloc, sync_free, static, graphs = GENERATION_VARIANTS[variant]
        saved = {k: getattr(adapter, k) for k in SWITCHES}
        adapter.preallocate_cache, adapter.sync_free_decode, adapter.batch_size = prealloc, sync_free, b
        adapter.static_decode, adapter.cuda_graphs = static, graphs
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(count)]

        def call():
            drawn[variant, b] = adapter.generate_image_tokens(prompts, list(range(count)), sampling)

        try:
            reset_peak(dev)
            walls = [elapsed(dev, call)[0] for _ in range(repeats)]
        finally:
            for k, v in saved.items():
                setattr(adapter, k, v)
        wall = min(walls[1:]) if repeats > 1 else walls[0]
        P = adapter.image_prompt_ids(prompts[:b])[0].shape[1]
        flops = generation_flops(shapes, 2 * count, P, N)
        floor = decode_bytes(adapter, 2 * b, P, N) * (count // b) / bandwidth
        rows.append({"variant": variant, "method": method, "batch": b, "images": count, "wall_s": wall,
                     "first_call_s": walls[0], "repeats": repeats,
                     "images_per_s": count / wall, "peak_gib": peak_gib(dev), "prompt_tokens": P,
                     "fraction_of_matmul_peak": flops / wall / peak, "bandwidth_floor_s": floor,
                     "fraction_of_bandwidth_floor": floor / wall})
        print(f"  {method}, batch {b}: {count / wall:.3f} images/s ({wall:.1f} s; first call {walls[0]:.1f} s; "
              f"peak {rows[-1]['peak_gib']:.1f} GiB)", flush=True)
        on_row(rows)

    def attempt(variant, b, count):  # a variant that fails (a capture error, out of memory) costs its row alone
        if past_deadline():
            rows.append({"variant": variant, "method": GENERATION_VARIANTS[variant][0], "batch": b,
                         "error": "skipped: past --deadline"})
            on_row(rows)
            return
        try:
            run(variant, b, count)
        except Exception as e:
            rows.append({"variant": variant, "method": GENERATION_VARIANTS[variant][0], "batch": b,
                         "error": f"{type(e).__name__}: {e}"[:2000]})
            print(f"  {variant}, batch {b} failed: {rows[-1]['error'][:300]}", flush=True)
            on_row(rows)

    for variant in variants:
        if variant in PER_BATCH:
            for b in batches:
                attempt(variant, b, b)
        elif variant == "one-at-a-time":
            attempt(variant, 1, baseline_images)
        else:
            attempt(variant, batches[-1], batches[-1])
    base = next((r["images_per_s"] for r in rows if r["variant"] == "one-at-a-time" and "error" not in r), None)
    for r in rows:
        if "error" in r:
            continue
        r["speedup"] = r["images_per_s"] / base if base else None
        ours = drawn.get(("ours", r["batch"]))
        if r["variant"] in ("static", "graphs") and ours is not None:
            # exact on the CPU in fp32 (tests); in bf16 a rounding difference can flip a draw and then the rest of
            # that image differs, so the share of identical images says more than a tolerance would
            same = drawn[r["variant"], r["batch"]].codes == ours.codes
            r["codes_equal_to_ours"] = same.float().mean().item()
            r["images_identical_to_ours"] = same.all(-1).float().mean().item()
    return rows


def bench_vqa(adapter, num_images, questions) -> list[dict]:
    from ospo.sampling import ImageSampling

    dev = adapter.device
    adapter.batch_size = num_images
    codes = adapter.generate_image_tokens([PROMPTS[i % 4] for i in range(num_images)], list(range(num_images)),
                                          ImageSampling()).codes
    images = adapter.decode_images(codes)
    adapter.yes_no_scores(images[:1], [QUESTIONS[:1]])  # warm-up
    rows = []
    for q in questions:
        qs = [QUESTIONS[:q]] * num_images
        n = num_images * q
        adapter.yes_no_scores(images, qs, share_prefix=False)  # first calls with these shapes: not timed
        adapter.yes_no_scores(images, qs)
        full = elapsed(dev, lambda: adapter.yes_no_scores(images, qs, share_prefix=False))[0]
        reset_peak(dev)
        shared = elapsed(dev, lambda: adapter.yes_no_scores(images, qs))[0]
        rows.append({"questions_per_image": q, "images": num_images, "full_q_per_s": n / full,
                     "shared_q_per_s": n / shared, "speedup": full / shared, "shared_peak_gib": peak_gib(dev)})
        print(f"  VQA {q} q/image: full {n / full:.1f} q/s, shared {n / shared:.1f} q/s", flush=True)
    return rows


def bench_training(adapter, pairs, micro_batch, steps, peak) -> list[dict]:
    """The variants of benchmarks.training_speed on one model, in this process (CUDA memory counters are per
    process and resettable). The LoRA adapter is made once and trained on by each variant in turn; gradient
    checkpointing comes last because it stays enabled."""
    from ospo.config import TrainConfig

    from benchmarks.training_speed import VARIANTS, make_pairs, make_step, png_bytes

    dev, N = adapter.device, adapter.num_image_tokens
    data = make_pairs(pairs, N, adapter.codebook_size)
    pngs = (png_bytes(adapter, data.chosen), png_bytes(adapter, data.rejected))
    shapes_of = None
    rows = []
    for variant, (reencode, checkpointing) in VARIANTS.items():
        cfg = TrainConfig(batch_size=pairs, micro_batch_size=micro_batch, gradient_checkpointing=checkpointing)
        step = make_step(adapter, cfg, data, pngs if reencode else None)
        shapes_of = shapes_of or model_shapes(adapter.janus)
        before = reset_peak(dev)[0]
        step(0)  # warm-up: gradients and optimizer state
        best = float("inf")
        for s in range(1, steps + 1):
            seqs: list = []
            best = min(best, elapsed(dev, lambda: seqs.extend(step(s)))[0])
        flops = training_flops(shapes_of, seqs, N, full=False)
        gib = peak_gib(dev)
        rows.append({"variant": variant, "pairs": pairs, "micro_batch": micro_batch, "step_s": best,
                     "pairs_per_s": pairs / best, "peak_gib": gib, "train_gib": gib - before / 2**30,
                     "fraction_of_matmul_peak": flops / best / peak})
        print(f"  train {variant}: {pairs / best:.2f} pairs/s, peak {gib:.1f} GiB", flush=True)
        del step
    adapter.model.eval()
    base = next(r for r in rows if r["variant"] == "re-encode PNG")["pairs_per_s"]
    for r in rows:
        r["speedup_vs_reencode"] = r["pairs_per_s"] / base
    return rows


def bench_profile(adapter, batches, tokens) -> list[dict]:
    """GPU-busy share of a short generation's wall time and its top kernels, at the smallest and largest batch."""
    from torch.profiler import ProfilerActivity, profile

    from ospo.sampling import ImageSampling

    dev, sampling, full = adapter.device, ImageSampling(cfg_scale=5.0), adapter.num_image_tokens
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    rows = []
    adapter.num_image_tokens = tokens
    try:
        for b in (batches[0], batches[-1]):
            adapter.batch_size = b
            prompts = [PROMPTS[i % 4] for i in range(b)]
            adapter.generate_image_tokens(prompts, list(range(b)), sampling)
            with profile(activities=acts) as prof:
                wall = elapsed(dev, lambda: adapter.generate_image_tokens(prompts, list(range(b)), sampling))[0]
            events = prof.key_averages()
            if os.environ.get("PROFILE_DIR"):
                with open(os.path.join(os.environ["PROFILE_DIR"], f"profile_b{b}.txt"), "w") as f:
                    for key in ("self_cpu_time_total", "self_device_time_total"):
                        f.write(events.table(sort_by=key, row_limit=25) + "\n")
            attr = "self_device_time_total" if hasattr(events[0], "self_device_time_total") else "self_cuda_time_total"
            kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA  # not the aten ops
                       and not getattr(e, "is_user_annotation", False)]  # nor annotated ranges over kernels
            busy = sum(getattr(e, attr) for e in kernels) / 1e6  # (their device time is their kernels', again)
            top = sorted(events, key=lambda e: getattr(e, attr), reverse=True)[:8]
            rows.append({"batch": b, "tokens": tokens, "wall_s": wall, "gpu_busy_s": busy,
                         "gpu_busy_share": busy / wall, "top": [(e.key, getattr(e, attr) / 1e6, e.count) for e in top]})
            print(f"  profile batch {b}, {tokens} tokens: wall {wall:.2f} s, GPU busy {busy:.2f} s", flush=True)
    finally:
        adapter.num_image_tokens = full
    return rows


def print_tables(name, m):
    print(f"\n## {name}: {m['params'] / 1e9:.2f}B parameters, {m['num_image_tokens']} image tokens, bf16, CFG 5")
    if "generation" in m:
        print("| method | batch | images/s | speed-up | first call s | peak GiB | of matmul peak | of bandwidth floor |"
              "\n|---|---|---|---|---|---|---|---|")
        for r in m["generation"]:
            if "error" in r:
                print(f"| {r['method']} | {r['batch']} | failed: {r['error'][:120]} | | | | | |")
                continue
            speedup = f"{r['speedup']:.1f}x" if r.get("speedup") else "-"
            print(f"| {r['method']} | {r['batch']} | {r['images_per_s']:.3f} | {speedup} | {r['first_call_s']:.1f} | "
                  f"{r['peak_gib']:.1f} | {100 * r['fraction_of_matmul_peak']:.1f}% | "
                  f"{100 * r['fraction_of_bandwidth_floor']:.0f}% |")
        for r in m["generation"]:
            if "codes_equal_to_ours" in r:
                print(f"{r['method']}, batch {r['batch']}: {100 * r['codes_equal_to_ours']:.1f}% of codes and "
                      f"{100 * r['images_identical_to_ours']:.0f}% of images identical to ours")
    if "vqa" in m:
        print("\n| questions/image | full forward q/s | prefix-shared q/s | speed-up |\n|---|---|---|---|")
        for r in m["vqa"]:
            print(f"| {r['questions_per_image']} | {r['full_q_per_s']:.1f} | {r['shared_q_per_s']:.1f} | "
                  f"{r['speedup']:.1f}x |")
    if "training" in m:
        print("\n| variant | pairs/s | speed-up vs re-encode | peak GiB | train GiB | of matmul peak |\n"
              "|---|---|---|---|---|---|")
        for r in m["training"]:
            print(f"| {r['variant']} | {r['pairs_per_s']:.2f} | {r['speedup_vs_reencode']:.2f}x | {r['peak_gib']:.1f} "
                  f"| {r['train_gib']:.1f} | {100 * r['fraction_of_matmul_peak']:.1f}% |")
    for r in m.get("profile", []):
        print(f"\nprofile, batch {r['batch']} ({r['tokens']} tokens): GPU busy {100 * r['gpu_busy_share']:.0f}% of "
              f"{r['wall_s']:.2f} s; top: " + "; ".join(f"{k} {t:.3f} s x{c}" for k, t, c in r["top"][:5]))


# long: flags, then one section per workload in order, saving after each (a script read top to bottom)
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="7b,1b", help="comma-separated: 7b, 1b, mini")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batches", default=None, help="generation batches (default per arch, e.g. 7b: 1,16,64,128)")
    ap.add_argument("--baseline-images", type=int, default=2, help="images of the one-at-a-time baseline")
    ap.add_argument("--variants", default="one-at-a-time,dynamic,4d-mask,ours",
                    help="generation variants, run in this order: " + ", ".join(GENERATION_VARIANTS))
    ap.add_argument("--repeats", type=int, default=2,
                    help="calls per generation row; the fastest after the first counts (1: the first call alone)")
    ap.add_argument("--no-cudnn-sdpa", action="store_true",
                    help="turn off PyTorch's cuDNN attention backend (it builds a plan per new sequence length)")
    ap.add_argument("--vqa-images", type=int, default=16)
    ap.add_argument("--questions", default="3,6,10")
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3, help="timed training steps per variant (the fastest counts)")
    ap.add_argument("--profile-tokens", type=int, default=32)
    ap.add_argument("--matmul-size", type=int, default=8192)
    ap.add_argument("--sections", default=",".join(SECTIONS))
    ap.add_argument("--deadline", type=float, default=None, help="seconds; later sections are skipped")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for given, known in ((args.sections, SECTIONS), (args.variants, GENERATION_VARIANTS)):
        bad = sorted(set(given.split(",")) - set(known))
        if bad:
            raise SystemExit(f"unknown {', '.join(bad)}; choose from {', '.join(known)}")
    start = time.perf_counter()

    def past_deadline() -> bool:
        return bool(args.deadline) and time.perf_counter() - start > args.deadline

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU here (for a dry run on the CPU: --arch mini --device cpu)")
    from benchmarks.janus_pro import NAMES, build

    if args.no_cudnn_sdpa:
        torch.backends.cuda.enable_cudnn_sdp(False)

    import transformers

    report = {"commit": _commit(), "torch": torch.__version__, "transformers": transformers.__version__,
              "device": str(device),
              "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None, "models": {}}
    report["ceilings"] = ceilings(device, args.matmul_size)
    peak, bw = report["ceilings"]["matmul_flops_per_s"], report["ceilings"]["copy_bytes_per_s"]
    print(f"ceilings on {report['gpu'] or device}: bf16 matmul {peak / 1e12:.1f} TFLOP/s, copy {bw / 1e12:.2f} TB/s",
          flush=True)

    def save():
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=1)

    save()
    for arch in args.arch.split(","):
        batches = [int(b) for b in (args.batches or DEFAULT_BATCHES[arch]).split(",")]
        t0 = time.perf_counter()
        adapter = build(arch, args.device)
        m = report["models"][NAMES[arch]] = {
            "params": sum(p.numel() for p in adapter.janus.parameters()), "num_image_tokens": adapter.num_image_tokens,
            "build_s": time.perf_counter() - t0}
        print(f"{NAMES[arch]}: built in {m['build_s']:.1f} s", flush=True)
        sections = {
            "generation": lambda: bench_generation(adapter, batches, args.baseline_images, peak, bw,
                                                   args.variants.split(","), args.repeats,
                                                   lambda rows: (m.__setitem__("generation", rows), save()),
                                                   past_deadline),
            "vqa": lambda: bench_vqa(adapter, args.vqa_images, [int(q) for q in args.questions.split(",")]),
            "training": lambda: bench_training(adapter, args.pairs, args.micro_batch, args.steps, peak),
            "profile": lambda: bench_profile(adapter, batches, args.profile_tokens),
        }
        for section in [s for s in SECTIONS if s in args.sections.split(",")]:  # training last: it leaves LoRA on
            if past_deadline():
                m.setdefault("skipped", []).append(section)
                print(f"  {section}: skipped (past --deadline {args.deadline:.0f} s)", flush=True)
                continue
            try:
                m[section] = sections[section]()
            except Exception as e:  # keep the other sections' figures; say what broke
                m[f"{section}_error"] = f"{type(e).__name__}: {e}"
                print(f"  {section} failed: {type(e).__name__}: {e}", flush=True)
            save()
        print_tables(NAMES[arch], m)
        del adapter, sections
        if device.type == "cuda":
            torch.cuda.empty_cache()
    report["wall_s"] = time.perf_counter() - start
    save()


if __name__ == "__main__":
    main()

"""Adapter throughput against the public research code's access pattern, in one process on one model.

- image generation: our batched prefill + decode loop (preallocated KV cache) at batch 1/16/64 vs one image at
  a time, each with a fresh transformers DynamicCache (what the public OSPO code does); plus our loop with the
  DynamicCache at the largest batch, which isolates the cache's share (`benchmarks.profile` says why);
- self-VQA: prefix-shared scoring (image + preamble encoded once per image) vs one full forward per question.

Models: the tiny test Janus and a ~50M-parameter random Janus with real-sized codebook (16384 codes).

    python -m benchmarks.adapter_speed [--models tiny,50m] [--batches 1,16,64] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch

from ospo.model import JanusAdapter
from ospo.sampling import ImageSampling
from ospo.tiny import TinyJanusSpec, save_tiny_janus

SPECS = {
    "tiny": TinyJanusSpec(),
    # ~50M parameters: LM 512 wide x 8 layers, Janus-Pro's 16384-code VQ vocabulary, 16x16 = 256 image tokens
    "50m": TinyJanusSpec(image_size=256, patch_size=16, vq_channel_multiplier=(1, 1, 2, 2, 4), hidden_size=512,
                         num_layers=8, num_heads=8, intermediate_size=1376, vision_hidden_size=128, vision_layers=2,
                         codebook_size=16384, max_position_embeddings=1024),
}
PROMPTS = ["a red circle left of a blue square", "two green cats", "a yellow star above a black dog",
           "a purple triangle and an orange flower on the left"]
QUESTIONS = ["is there a red circle ?", "is there a blue square ?", "is the circle left of the square ?",
             "are there two cats ?", "is there a star ?", "is the star above the dog ?", "is there a dog ?",
             "is there a triangle ?", "is the flower orange ?", "is there a tree ?"]


def timed(fn, repeat=1):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_generation(model, batches, baseline_images):
    sampling = ImageSampling(cfg_scale=5.0)
    rows = []

    def one_at_a_time():
        for i in range(baseline_images):
            model.generate_image_tokens([PROMPTS[i % 4]], [i], sampling)  # fresh cache per call

    def batched(b):
        model.batch_size = b
        prompts = [PROMPTS[i % 4] for i in range(b)]
        return b / timed(lambda: model.generate_image_tokens(prompts, list(range(b)), sampling))

    model.generate_image_tokens([PROMPTS[0]], [0], sampling)  # warm-up: the first call of a process is slower
    model.preallocate_cache = False
    try:
        base = baseline_images / timed(one_at_a_time)
        rows.append({"method": "one-at-a-time (fresh DynamicCache)", "batch": 1, "images_per_s": base,
                     "speedup": 1.0})
        rate = batched(batches[-1])
        rows.append({"method": "ours, DynamicCache", "batch": batches[-1], "images_per_s": rate,
                     "speedup": rate / base})
    finally:
        model.preallocate_cache = True
    for b in batches:
        rate = batched(b)
        rows.append({"method": "ours (batched, preallocated cache)", "batch": b, "images_per_s": rate,
                     "speedup": rate / base})
    return rows


def bench_vqa(model, num_images, questions_per_image):
    codes = model.generate_image_tokens([PROMPTS[i % 4] for i in range(num_images)], list(range(num_images)),
                                        ImageSampling()).codes
    images = model.decode_images(codes)
    rows = []
    for q in questions_per_image:
        qs = [QUESTIONS[:q]] * num_images
        n = num_images * q
        full = n / timed(lambda: model.yes_no_scores(images, qs, share_prefix=False))
        shared = n / timed(lambda: model.yes_no_scores(images, qs))
        rows.append({"questions_per_image": q, "full_q_per_s": full, "shared_q_per_s": shared,
                     "speedup": shared / full})
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="tiny,50m")
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--baseline-images", type=int, default=8)
    ap.add_argument("--vqa-images", type=int, default=16)
    ap.add_argument("--questions", default="3,6,10")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    report = {"torch": torch.__version__, "threads": args.threads, "models": {}}
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory() as d:
            save_tiny_janus(d, SPECS[name])
            model = JanusAdapter.from_pretrained(d)
        params = sum(p.numel() for p in model.janus.parameters())
        gen = bench_generation(model, [int(b) for b in args.batches.split(",")], args.baseline_images)
        model.batch_size = 16
        vqa = bench_vqa(model, args.vqa_images, [int(q) for q in args.questions.split(",")])
        report["models"][name] = {"params": params, "num_image_tokens": model.num_image_tokens,
                                  "generation": gen, "vqa": vqa}
        print(f"\n## {name}: {params / 1e6:.1f}M parameters, {model.num_image_tokens} image tokens, CFG 5, "
              f"{args.threads} threads")
        print("| method | batch | images/s | speed-up |\n|---|---|---|---|")
        for r in gen:
            print(f"| {r['method']} | {r['batch']} | {r['images_per_s']:.2f} | {r['speedup']:.1f}x |")
        print("\n| questions/image | full forward q/s | prefix-shared q/s | speed-up |\n|---|---|---|---|")
        for r in vqa:
            print(f"| {r['questions_per_image']} | {r['full_q_per_s']:.1f} | {r['shared_q_per_s']:.1f} | "
                  f"{r['speedup']:.1f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()

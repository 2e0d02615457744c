"""Where the time goes: torch.profiler over image generation, self-VQA and one training step.

The profile that decides what to optimise (the performance issue asks for one before any optimisation). Each
workload runs once to warm up, then once under torch's autograd profiler (`use_kineto=False`: the kineto
profiler of torch 2.13 CPU held 8.7 GiB for one batch-4 generation of the 50M model and was OOM-killed at batch
16; this one holds ~5 GiB at batch 4, so keep `--batch` small on that model). The table groups the self time
of every aten op into a few kinds and reports the rest of the wall time as "outside aten ops" (Python,
transformers' module and cache bookkeeping, the profiler's own overhead):

- matmul: mm / addmm / bmm / matmul / linear / baddbmm;
- attention: scaled_dot_product_attention and its kernels;
- KV cache / copies: cat, copy_, index_copy, clone, dtype conversions, allocations (what a growing dynamic cache
  costs; also RoPE's rotate_half cats and the sampler's dtype casts, which are small);
- sampling: sort, cumsum, softmax, searchsorted, topk, log_softmax, gather (the CFG mix and inverse-CDF draw; in
  the VQA and training workloads the softmaxes of the losses land here too);
- other aten: norms, activations, elementwise mul/add, indexing.

Generation is profiled twice: with transformers' `DynamicCache` (the first profile: `aten::cat` of the growing
cache dominated) and with the adapter's preallocated cache (the fix). `--top N` also prints the N ops with the
most self time. Models as in `benchmarks.adapter_speed` (tiny, 50m) or a saved checkpoint directory.

    python -m benchmarks.profile [--models tiny,50m] [--batch 4] [--top 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch

from benchmarks.adapter_speed import PROMPTS, QUESTIONS, SPECS

KINDS = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::baddbmm",
               "aten::_addmm_activation"),
    "attention": ("aten::scaled_dot_product_attention", "aten::_scaled_dot_product_flash_attention_for_cpu",
                  "aten::_scaled_dot_product_attention_math", "aten::_scaled_dot_product_flash_attention"),
    "KV cache / copies": ("aten::cat", "aten::copy_", "aten::index_copy_", "aten::index_copy", "aten::clone",
                          "aten::contiguous", "aten::_to_copy", "aten::to", "aten::empty", "aten::empty_strided",
                          "aten::resize_", "aten::zeros", "aten::fill_", "aten::zero_"),
    "sampling": ("aten::sort", "aten::cumsum", "aten::_softmax", "aten::softmax", "aten::searchsorted",
                 "aten::topk", "aten::_log_softmax", "aten::log_softmax", "aten::gather", "aten::masked_fill",
                 "aten::argmax", "aten::clamp_"),
}


def kind_of(name: str) -> str:
    for kind, names in KINDS.items():
        if name in names:
            return kind
    return "other aten"


def profile(fn) -> dict:
    """Runs `fn` once to warm up and once under the profiler; returns wall time, per-kind self time, top ops."""
    fn()
    with torch.autograd.profiler.profile(use_kineto=False) as prof:
        t0 = time.perf_counter()
        fn()
        wall = time.perf_counter() - t0
    ops = [(e.key, e.self_cpu_time_total / 1e6, e.count) for e in prof.key_averages()
           if e.key.startswith("aten::")]
    by_kind: dict[str, float] = {}
    for name, seconds, _ in ops:
        by_kind[kind_of(name)] = by_kind.get(kind_of(name), 0.0) + seconds
    by_kind["outside aten ops"] = max(0.0, wall - sum(by_kind.values()))
    top = sorted(ops, key=lambda o: -o[1])
    return {"wall_s": wall, "by_kind": by_kind, "top": [{"op": n, "self_s": s, "calls": c} for n, s, c in top]}


def workloads(adapter, batch: int, vqa_images: int, questions: int):
    from ospo.sampling import ImageSampling

    sampling = ImageSampling(cfg_scale=5.0)
    adapter.batch_size = batch
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
    codes = torch.randint(0, adapter.codebook_size, (vqa_images, adapter.num_image_tokens),
                          generator=torch.Generator().manual_seed(0))
    images = adapter.decode_images(codes)  # the cost of VQA does not depend on what the images show
    qs = [QUESTIONS[:questions]] * len(images)
    from benchmarks.training_speed import make_pairs, make_step
    from ospo.config import TrainConfig

    train = {}

    def train_step():
        # built on first call: make_step wraps the model with LoRA and sets train mode, which must not touch the
        # inference workloads (they run first, on the plain model in eval mode)
        if not train:
            data = make_pairs(2, adapter.num_image_tokens, adapter.codebook_size)
            train["step"] = make_step(adapter, TrainConfig(batch_size=2, micro_batch_size=2), data)
            train["count"] = 0
        train["count"] += 1
        return train["step"](train["count"])
    def generate(preallocate: bool):
        def run():
            adapter.preallocate_cache = preallocate
            try:
                adapter.generate_image_tokens(prompts, list(range(batch)), sampling)
            finally:
                adapter.preallocate_cache = True
        return run

    return {
        f"generate, batch {batch}, CFG 5, DynamicCache": generate(False),
        f"generate, batch {batch}, CFG 5, preallocated cache": generate(True),
        f"self-VQA, {len(images)} images x {questions} questions": lambda: adapter.yes_no_scores(images, qs),
        "train step, 2 pairs, LoRA r=32": train_step,  # last: it turns the model into a LoRA model
    }


def load(name: str):
    from ospo.model import JanusAdapter
    from ospo.tiny import save_tiny_janus

    if name in SPECS:
        with tempfile.TemporaryDirectory() as d:
            save_tiny_janus(d, SPECS[name])
            return JanusAdapter.from_pretrained(d)
    return JanusAdapter.from_pretrained(name)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="tiny,50m", help="comma-separated: tiny, 50m or a checkpoint directory")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--vqa-images", type=int, default=16)
    ap.add_argument("--questions", type=int, default=6)
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    report = {"torch": torch.__version__, "threads": args.threads, "models": {}}
    for name in args.models.split(","):
        adapter = load(name)
        params = sum(p.numel() for p in adapter.janus.parameters())
        results = {label: profile(fn) for label, fn in
                   workloads(adapter, args.batch, args.vqa_images, args.questions).items()}
        report["models"][name] = {"params": params, "workloads": results}
        kinds = list(KINDS) + ["other aten", "outside aten ops"]
        print(f"\n## {name}: {params / 1e6:.1f}M parameters, {adapter.num_image_tokens} image tokens, "
              f"{args.threads} threads\n")
        print("| workload | wall s | " + " | ".join(kinds) + " |\n|---|---|" + "---|" * len(kinds))
        for label, r in results.items():
            shares = " | ".join(f"{100 * r['by_kind'].get(k, 0.0) / r['wall_s']:.0f}%" for k in kinds)
            print(f"| {label} | {r['wall_s']:.2f} | {shares} |")
        for label, r in results.items():
            print(f"\n{label}: top {args.top} ops by self time\n\n| op | calls | self s | share of wall |\n"
                  "|---|---|---|---|")
            for o in r["top"][:args.top]:
                print(f"| {o['op']} | {o['calls']} | {o['self_s']:.3f} | {100 * o['self_s'] / r['wall_s']:.1f}% |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()

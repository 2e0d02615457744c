"""Achieved FLOP/s of image generation and of a training step, as a fraction of this machine's matmul throughput.

Peak: a large square `torch.mm` timed in the same run, FLOP = 2 m n k (fp32 on CPU; on CUDA in the model's dtype,
with fp32 reported beside it). Model FLOPs are counted analytically from the model's modules, multiply-adds of
the weight matmuls and of attention only (norms, RoPE, softmax, sampling and the VQ are not counted), with

    W = weights of the LM decoder layers' linears (q, k, v, o, gate, up, down)   L layers, attention width d
    H = weights of the generation head (proj_out + vision_head), A = of the generation aligner (code -> LM width)

(a) image generation, batched with KV cache and CFG (`JanusAdapter.generate_image_tokens`): R = 2B rows for B
    images ([cond; uncond]), prompt padded to P tokens, N image tokens. Prefill processes P tokens per row, then N-1
    decode steps of one token each, the head is applied N times per row, the aligner embeds N-1 sampled codes:

        FLOP = R [ 2W (P + N - 1) + 2H N + 2A (N - 1) + 2 L d P (P + 1) + 4 L d sum_{t=1}^{N-1} (P + t) ]

    i.e. ~ 2 x 2 (W + H + A) per generated token and image plus attention over the cache (4 L d per cached key).
(b) one OSPO-v2 training step (`benchmarks.training_speed.make_step`, LoRA r=32 on the LM linears, the
    default recipe): per forward sequence of T = P + N tokens (rows [x;y_w], [x;y_l], [x~;y_w]),

        forward  = 2 (W + Wl) T + 2 L d T (T + 1) + 2 H N + 2 A N
        backward = 2 W T + 4 Wl T + 4 L d T (T + 1) + 2 H N     + 2 W T (--full-finetune) | - 2 Wqkv0 T (LoRA)

    Wl = LoRA weights. The backward always propagates activation gradients through the frozen weights (2 W T)
    and the head (2 H N, to reach the LM); weight gradients are computed only for trained weights (LoRA: 2 Wl T;
    full fine-tuning of the LM: 2 W T, giving the usual ~6 W T). So LoRA ~ 4 W T, full ~ 6 W T, attention 3x its
    forward. Under LoRA the input embeddings are frozen, so autograd skips the activation gradient of layer 0's
    q/k/v projections (Wqkv0, with their LoRA A). Model FLOPs: the recomputation of gradient checkpointing (off
    here) would not count. `--check-flops` compares the matmul part (attention left out) with what
    torch.utils.flop_counter counts on the same workload.

Attention is counted causally (half of T^2); PyTorch's CPU sdpa with a padding mask computes all of it, so the
hardware does more than the count. On CPU, rates are per *CPU-second* of the process (`time.process_time`, all
threads, 1 thread by default), for the matmul peak and the workloads alike: a niced benchmark on a shared machine
gets a varying share of the cores, which moves wall time by several x but barely moves CPU time.

Models: the tiny test Janus and the ~50M random Janus of `benchmarks.adapter_speed`, or `--model DIR` (e.g. the
shipped ShapeWorld model, src/ospo/shapeworld/checkpoint). `--device cuda --janus-pro-7b` builds a randomly
initialised model with Janus-Pro-7B's exact configuration in bf16 and measures images/s at 576 tokens with CFG at
batch 16 and 64 (generation only; it needs a CUDA GPU with ~60 GB free for batch 64).

    python -m benchmarks.efficiency [--models tiny,50m] [--model DIR] [--batch 8] [--json out.json]
    python -m benchmarks.efficiency --device cuda --janus-pro-7b [--batches 16,64]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass

import torch

from benchmarks.adapter_speed import PROMPTS, SPECS

@dataclass(frozen=True)
class Shapes:
    """What the FLOP count needs of a model (see the module docstring)."""

    W: int  # LM decoder-layer linear weights (LoRA weights excluded)
    Wl: int  # LoRA weights in the LM (0 without LoRA)
    H: int  # generation-head linear weights
    A: int  # generation-aligner linear weights
    L: int  # decoder layers
    d: int  # attention width (heads x head_dim)
    Wqkv0: int  # layer 0's q/k/v weights (+ their LoRA A): no activation gradient when the embeddings are frozen


def model_shapes(janus) -> Shapes:
    lm, cfg = janus.model.language_model, janus.config.text_config

    def linear_weights(module, lora: bool) -> int:
        return sum(m.weight.numel() for n, m in module.named_modules()
                   if isinstance(m, torch.nn.Linear) and ("lora_" in n) == lora)

    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    attn0 = lm.layers[0].self_attn
    qkv0 = sum(m.weight.numel() for proj in (attn0.q_proj, attn0.k_proj, attn0.v_proj) for n, m in proj.named_modules()
               if isinstance(m, torch.nn.Linear) and "lora_B" not in n)
    return Shapes(W=linear_weights(lm.layers, False), Wl=linear_weights(lm.layers, True),
                  H=linear_weights(janus.model.generation_head, False),
                  A=linear_weights(janus.model.generation_aligner, False),
                  L=cfg.num_hidden_layers, d=cfg.num_attention_heads * head_dim, Wqkv0=qkv0)


def generation_flops(s: Shapes, rows: int, P: int, N: int, attention: bool = True) -> float:
    """FLOPs of generating one batch: `rows` sequences (2B with CFG), prompt P tokens, N image tokens."""
    cached_keys = (N - 1) * P + (N - 1) * N // 2  # sum_{t=1}^{N-1} (P + t)
    per_row = 2 * s.W * (P + N - 1) + 2 * s.H * N + 2 * s.A * (N - 1)
    if attention:
        per_row += 2 * s.L * s.d * P * (P + 1) + 4 * s.L * s.d * cached_keys
    return float(rows * per_row)


def training_flops(s: Shapes, sequences: list[tuple[int, int]], N: int, full: bool, attention: bool = True) -> float:
    """FLOPs of forward + backward over `sequences` = [(rows, T)], N image tokens scored per row."""
    total = 0
    for rows, T in sequences:
        attn = 2 * s.L * s.d * T * (T + 1) if attention else 0
        forward = 2 * (s.W + s.Wl) * T + attn + 2 * s.H * N + 2 * s.A * N
        backward = 2 * s.W * T + 4 * s.Wl * T + 2 * attn + 2 * s.H * N
        backward += 2 * s.W * T if full else -2 * s.Wqkv0 * T  # weight grads / no input grad into frozen embeds
        total += rows * (forward + backward)
    return float(total)


# ------------------------------------------------------------------------------------------------ timing
def clock(device: torch.device) -> tuple[float, float]:
    """(wall seconds, process CPU seconds), after the device's queued work is done."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter(), time.process_time()


def elapsed(device, fn) -> tuple[float, float]:
    w0, c0 = clock(device)
    fn()
    w1, c1 = clock(device)
    return w1 - w0, c1 - c0


def seconds(wall_cpu: tuple[float, float], device: torch.device) -> float:
    """The time the rates use: CPU time on CPU, wall time on an accelerator."""
    return wall_cpu[1] if device.type == "cpu" else wall_cpu[0]


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, repeat: int) -> float:
    """Best FLOP/s of an (n x n) @ (n x n) product over `repeat` runs (after one warm-up)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    best = min(seconds(elapsed(device, lambda: torch.mm(a, b)), device) for _ in range(repeat))
    return 2 * n**3 / best


# ------------------------------------------------------------------------------------------------ workloads
def counted_matmul_flops(fn) -> float:
    """FLOPs torch.utils.flop_counter sees while fn() runs, attention kernels left out (the check of the count)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(sum(v for op, v in counter.get_flop_counts()["Global"].items() if "attention" not in str(op)))


def measure_generation(adapter, batch: int, check: bool, cfg_scale: float = 5.0) -> dict:
    from ospo.sampling import ImageSampling

    adapter.batch_size = batch
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
    sampling = ImageSampling(cfg_scale=cfg_scale)
    adapter.generate_image_tokens(prompts[:1], [0], sampling)  # warm-up (allocator, kernels)
    t = elapsed(adapter.device, lambda: adapter.generate_image_tokens(prompts, list(range(batch)), sampling))
    P = adapter.image_prompt_ids(prompts)[0].shape[1]
    rows = 2 * batch if cfg_scale != 1 else batch
    shapes = model_shapes(adapter.janus)
    flops = generation_flops(shapes, rows, P, adapter.num_image_tokens)
    sec = seconds(t, adapter.device)
    out = {"workload": f"generate, batch {batch}, CFG", "items": batch, "unit": "images", "flops": flops,
           "wall_s": t[0], "cpu_s": t[1], "items_per_s": batch / sec, "flops_per_s": flops / sec}
    if check:
        out["check"] = {"counted": counted_matmul_flops(
            lambda: adapter.generate_image_tokens(prompts, list(range(batch)), sampling)),
            "analytic": generation_flops(shapes, rows, P, adapter.num_image_tokens, attention=False)}
    return out


def measure_training(adapter, pairs: int, micro_batch: int, steps: int, full: bool, check: bool) -> dict:
    from ospo.config import LoraSettings, TrainConfig

    from benchmarks.training_speed import make_pairs, make_step

    cfg = TrainConfig(batch_size=pairs, micro_batch_size=micro_batch, lora=LoraSettings(enabled=not full))
    data = make_pairs(pairs, adapter.num_image_tokens, adapter.codebook_size)
    step = make_step(adapter, cfg, data)
    step(0)  # warm-up: gradients and optimizer state
    N, dims, dev = adapter.num_image_tokens, model_shapes(adapter.janus), adapter.device
    runs = []  # (FLOPs, (wall, cpu)) per step; the fastest step is reported
    for s in range(1, steps + 1):
        shapes: list = []
        t = elapsed(dev, lambda: shapes.extend(step(s)))
        runs.append((training_flops(dims, shapes, N, full), t))
    flops, t = max(runs, key=lambda r: r[0] / seconds(r[1], dev))
    sec = seconds(t, dev)
    kind = "full LM" if full else "LoRA r=32"
    out = {"workload": f"train step, {pairs} pairs, {kind}", "items": pairs, "unit": "pairs", "flops": flops,
           "wall_s": t[0], "cpu_s": t[1], "items_per_s": pairs / sec, "flops_per_s": flops / sec,
           "steps_timed": steps}
    if check:
        one: list = []
        out["check"] = {"counted": counted_matmul_flops(lambda: one.extend(step(steps + 1))),
                        "analytic": training_flops(dims, one, N, full, attention=False)}
    adapter.model.eval()
    return out


# ------------------------------------------------------------------------------------------------ models
def janus_pro_7b(device: str):
    """A JanusAdapter over a randomly initialised Janus-Pro-7B (bf16, built on `device`); see benchmarks.janus_pro."""
    from benchmarks.janus_pro import build

    return build("7b", device)


def load_models(args):
    """Yields (name, adapter) one at a time."""
    from ospo.model import JanusAdapter
    from ospo.tiny import save_tiny_janus

    if args.janus_pro_7b:
        yield "Janus-Pro-7B (random, bf16)", janus_pro_7b(args.device)
        return
    if args.model:
        yield args.model, JanusAdapter.from_pretrained(args.model, device=args.device)
        return
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory() as d:
            save_tiny_janus(d, SPECS[name])
            adapter = JanusAdapter.from_pretrained(d, device=args.device)
        yield name, adapter


# long: flags, then one section per workload in order (a script read top to bottom)
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="tiny,50m")
    ap.add_argument("--model", default=None, help="a saved Janus checkpoint directory instead of --models")
    ap.add_argument("--janus-pro-7b", action="store_true", help="random Janus-Pro-7B in bf16 (needs --device cuda)")
    ap.add_argument("--batches", default="8", help="generation batch sizes (default 8; 16,64 with --janus-pro-7b)")
    ap.add_argument("--pairs", type=int, default=2, help="pairs per training step (0: skip training)")
    ap.add_argument("--micro-batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2, help="timed training steps after one warm-up (the fastest counts)")
    ap.add_argument("--full-finetune", action="store_true", help="train the whole LM instead of LoRA")
    ap.add_argument("--matmul-size", type=int, default=None, help="n of the n x n peak matmul (2048 CPU, 8192 CUDA)")
    ap.add_argument("--check-flops", action="store_true",
                    help="also run each workload under torch.utils.flop_counter and compare its matmul FLOPs with "
                         "the analytic count (attention left out of both)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.janus_pro_7b:
        if args.device != "cuda" or not torch.cuda.is_available():
            raise SystemExit("--janus-pro-7b needs --device cuda and a CUDA GPU: the random 7B model is ~15 GB in "
                             "bf16 and batch 64 with CFG holds a ~40 GB KV cache")
        if args.batches == "8":
            args.batches = "16,64"
        args.pairs = 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.janus_pro_7b else torch.float32
    n = args.matmul_size or (8192 if device.type == "cuda" else 2048)
    peak = matmul_peak(device, dtype, n, repeat=5)
    fp32_peak = peak if dtype == torch.float32 else matmul_peak(device, torch.float32, n, repeat=5)
    basis = "CPU-second" if device.type == "cpu" else "second (wall)"
    report = {"torch": torch.__version__, "device": str(device), "threads": args.threads, "matmul_n": n,
              "peak_flops_per_s": peak, "peak_dtype": str(dtype), "fp32_peak_flops_per_s": fp32_peak,
              "rate_basis": basis, "models": {}}
    print(f"matmul peak ({n}x{n}, {str(dtype).removeprefix('torch.')}): {peak / 1e9:.1f} GFLOP per {basis}"
          + (f"; fp32 {fp32_peak / 1e9:.1f}" if dtype != torch.float32 else ""))
    for name, adapter in load_models(args):
        params = sum(p.numel() for p in adapter.janus.parameters())
        rows = [measure_generation(adapter, int(b), args.check_flops) for b in args.batches.split(",")]
        if args.pairs:
            rows.append(measure_training(adapter, args.pairs, args.micro_batch, args.steps, args.full_finetune,
                                         args.check_flops))
        for r in rows:
            r["fraction_of_peak"] = r["flops_per_s"] / peak
        s = model_shapes(adapter.janus)
        report["models"][name] = {"params": params, "shapes": asdict(s), "num_image_tokens": adapter.num_image_tokens,
                                  "rows": rows}
        print(f"\n## {name}: {params / 1e6:.1f}M parameters (LM linears {s.W / 1e6:.1f}M, head {s.H / 1e6:.1f}M), "
              f"{adapter.num_image_tokens} image tokens, {args.threads} thread(s), {device}")
        print(f"| workload | GFLOP per item | items per {basis} | GFLOP per {basis} | fraction of matmul peak |\n"
              "|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['workload']} | {r['flops'] / r['items'] / 1e9:.2f} | {r['items_per_s']:.3f} {r['unit']} | "
                  f"{r['flops_per_s'] / 1e9:.1f} | {100 * r['fraction_of_peak']:.0f}% |")
        for r in rows:
            if "check" in r:
                c = r["check"]
                print(f"check, {r['workload']}: flop_counter {c['counted'] / 1e9:.4f} GFLOP vs analytic "
                      f"{c['analytic'] / 1e9:.4f} (matmuls, attention left out; "
                      f"ratio {c['counted'] / c['analytic']:.4f})")
        del adapter
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()

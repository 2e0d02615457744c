"""Does a fresh tiny ShapeWorld Janus learn *which glyph* a caption asks for? Head and curriculum variants.

The first shipped checkpoint generated the right number of objects in the right background but glyphs whose
shape, colour and texture did not depend on the caption at all (their distribution was the same for "a red
triangle" and "a blue circle"). This benchmark isolates why: it trains fresh models on text-to-image alone (same
spec, data, optimizer and seed for every variant; only the generation head's parametrization and the order of
the data differ) and measures on held-out captions:

- `identity nll`: -log p(code | "some glyph goes here") at the cells where the target has a glyph, in nats:
  how well the model names the glyph once it has decided to draw one. Chance (uniform over the 150 glyphs of the
  right background) is log 150 = 5.0; the floor (attributes the caption leaves open) is about 1.9.
- on `random` scenes (objects anywhere, as pretraining and the evaluation sets place them) and on `packed`
  scenes (objects in the first cells in the caption's order: see `mixture.sample_t2i_packed`).

Variants:
- `janus head`: transformers' head (Linear -> GELU -> Linear) with its default small init, random scenes;
- `linear-init + factor head`: `init_generation_head` (GELU in its near-linear range) and `add_factor_head`
  (output weights shared by codes with the same shape / colour / texture / background), random scenes;
- `... + packed curriculum`: the same, the first `--packed` steps on packed scenes.

    python -m experiments.t2i_learning [--steps 300] [--packed 120] [--threads 2]
    python -m experiments.t2i_learning --model DIR [--model DIR ...]   # only measure checkpoints: a saved model
                                                                      # or a pretraining run's pretrain-state/
"""

from __future__ import annotations

import argparse
import numpy as np
import torch

from ospo.model import JanusAdapter
from ospo.shapeworld.pretrain import (
    add_factor_head, init_code_embeddings, init_generation_head, lm_parameters, mixture, native_bf16,
    reinit_outside_vq, shapeworld_spec, t2i_loss,
)
from ospo.shapeworld.pretrain.vq import _empty_codes
from ospo.shapeworld.world import vocabulary
from ospo.tiny import build_tiny_janus

EMPTY = torch.tensor(_empty_codes())


def build(factor: bool) -> JanusAdapter:
    model, processor = build_tiny_janus(shapeworld_spec(), vocabulary(), seed=0)
    reinit_outside_vq(model, 0)
    init_code_embeddings(model)
    if factor:
        init_generation_head(model)
        add_factor_head(model)
    return JanusAdapter(model, processor, name="probe", batch_size=64)


@torch.no_grad()
def identity_nll(adapter: JanusAdapter, examples) -> float:
    adapter.janus.eval()
    codes = torch.from_numpy(np.stack([e.codes for e in examples]))
    glyph = ~torch.isin(codes, EMPTY)
    ids, mask = adapter.image_prompt_ids([e.prompt for e in examples])
    logp = adapter.image_token_logits(ids, mask, codes)[0].float().log_softmax(-1)
    is_glyph = torch.ones(logp.shape[-1], dtype=torch.bool)
    is_glyph[EMPTY] = False
    p_glyph = logp[..., is_glyph].logsumexp(-1)
    target = logp.gather(-1, codes[..., None])[..., 0]
    adapter.janus.train()
    return float((p_glyph - target)[glyph].mean())


def load(path: str) -> JanusAdapter:
    """A saved model, or the weights of a pretraining state (which may hold the factor head's parametrization)."""
    from pathlib import Path

    from safetensors.torch import load_file

    from ospo.shapeworld.pretrain import fold_factor_head

    if (Path(path) / "config.json").exists():
        return JanusAdapter.from_pretrained(path)
    weights = load_file(str(Path(path) / "model.safetensors"))
    model, processor = build_tiny_janus(shapeworld_spec(), vocabulary(), seed=0)
    if any(".parametrizations." in k for k in weights):
        add_factor_head(model)
    model.load_state_dict(weights)
    fold_factor_head(model)
    return JanusAdapter(model, processor, name=path, batch_size=64)


def run(name: str, factor: bool, packed_steps: int, steps: int, dev: dict, lr: float = 1e-3, batch: int = 32):
    adapter = build(factor)
    model = adapter.janus
    params = lm_parameters(model)
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95))
    model.train()
    rows = []
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / 30)
        rng = np.random.default_rng([11, step])
        sample = mixture.sample_t2i_packed if step < packed_steps else mixture.sample_t2i
        examples = [sample(rng) for _ in range(batch)]
        codes = torch.from_numpy(np.stack([e.codes for e in examples]))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=native_bf16()):  # emulated bf16 is ~10x slower
            loss = t2i_loss(adapter, [e.prompt for e in examples], codes, torch.zeros(batch, dtype=torch.bool))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if (step + 1) % (steps // 3) == 0 or step + 1 == steps:
            rows.append((step + 1, identity_nll(adapter, dev["random"]), identity_nll(adapter, dev["packed"])))
    return name, rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--packed", type=int, default=120)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", action="append", default=[], help="measure these checkpoints instead of training")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(123)
    dev = {"random": [mixture.sample_t2i(rng) for _ in range(96)],
           "packed": [mixture.sample_t2i_packed(rng) for _ in range(96)]}
    if args.model:
        print("identity nll in nats (chance 5.0, floor ~1.9)\n| checkpoint | random scenes | packed scenes |\n|---|---|---|")
        for path in args.model:
            adapter = load(path)
            print(f"| {path} | {identity_nll(adapter, dev['random']):.2f} | {identity_nll(adapter, dev['packed']):.2f} |")
        return
    variants = [("janus head", False, 0), ("linear-init + factor head", True, 0),
                (f"... + packed curriculum ({args.packed} steps)", True, args.packed)]
    print(f"identity nll in nats (chance 5.0, floor ~1.9), fresh models, {args.steps} text-to-image steps, batch 32")
    print("| variant | step | random scenes | packed scenes |")
    print("|---|---|---|---|")
    for name, factor, packed in variants:
        name, rows = run(name, factor, packed, args.steps, dev)
        for step, nll_random, nll_packed in rows:
            print(f"| {name} | {step} | {nll_random:.2f} | {nll_packed:.2f} |", flush=True)


if __name__ == "__main__":
    main()

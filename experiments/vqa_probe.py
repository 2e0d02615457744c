"""Can the language model learn to answer yes/no about a one-object scene, and what does it need?

    python -m experiments.vqa_probe [--model DIR] [--tokens aligner|words|words+position|realign|realign+position]
                                   [--questions shape|color|all|relation|left-right|left-of] [--copies 32]
                                   [--name-steps 0]
                                   [--name-kind color|band] [--freeze-aligner]
                                   [--steps 500] [--json out.json] [--save DIR]

Trains the language model of a ShapeWorld Janus (vision tower and VQ frozen) on yes/no questions about
one-object scenes only, and prints held-out accuracy by question kind every `--eval-every` steps. It isolates
one question: is the self-judge's weakness in the image tokens the LM reads, or in learning to find one cell
of 64? `--tokens` picks the image tokens:
- `aligner`: the model's own vision tower + aligner (what the checkpoint does);
- `words`: exact tokens from the scene, not the pixels: each cell's token is the sum of the LM's input
  embeddings of its shape, colour, texture and background words (`pretrain.word_targets`);
- `words+position`: `words` plus a fixed code of the cell's row and column (sinusoids, scaled to the word
  sums' mean norm): exact tokens that also say where the cell is, which the aligner's tokens do not;
- `realign`: the aligner re-trained first so that its tokens approximate `words` from pixels (the
  `align_target=words` phase of pretraining, `--align-steps` steps); `realign+position` towards `words+position`
  (`experiments.aligner`, which keeps that target outside the package).
`--copies N` draws the training object in N cells at step 0, shrinking to 1 by 70% of the steps (the
`vqa_curriculum_steps` schedule of pretraining); 1 = no curriculum. Evaluation always uses one copy.
`--name-steps K` first trains K steps on naming the object's colour ("what color is the circle ?", answered
with the colour word; its own copies schedule), the stage that made yes/no questions about colour learnable.
`--questions relation` asks "is the <shape> <relation> the <shape> ?" about two of 2-4 objects of distinct
shapes (`mixture.position_example`; `--copies` does not apply); `--questions left-right` the easiest kind: two
objects on one row, "left of" or "right of"; `--questions left-of` only "left of" (experiments.relation_probe:
on exact tokens with a position code one direction is learned, a fair coin between two is not, in 900 steps).
`--order question-first`, `--fp32` and `--token-scale` vary the format, the precision and the image tokens'
scale, three things that did not make them learnable (docs/experiments/finding-objects.md).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from experiments import aligner
from experiments.probes import load_probe_model
from benchmarks.tables import markdown_table
from ospo.shapeworld.pretrain.find import YES_NO_FIND_QUESTIONS, left_right_example
from ospo.shapeworld.pretrain import native_bf16


def one_object_example(rng, questions: str, copies: int = 1):
    """(scene, question text, answer, kind) about a random one-object scene drawn in `copies` cells."""
    from ospo.shapeworld import tasks
    from ospo.shapeworld.pretrain import mixture
    from ospo.shapeworld.questions import question_text

    if questions == "relation":
        scene, text, answer = mixture.position_example(rng, "relation")
        return scene, mixture.spaced(tasks.shapeworld_templates().vqa(text)), answer, "relation"
    if questions in ("left-right", "left-of"):
        scene, text, answer = left_right_example(rng, p_right=0.0 if questions == "left-of" else 0.5)
        return scene, mixture.spaced(tasks.shapeworld_templates().vqa(text)), answer, "relation"
    scene, question, yes = mixture.find_example(rng, copies, questions)
    text = mixture.spaced(tasks.shapeworld_templates().vqa(question_text(question)))
    return scene, text, "yes" if yes else "no", question.kind


def naming_example(rng, copies: int = 1, kind: str = "color"):
    """(scene, question, one-word answer, "name") for `--name-steps`: "color" is `mixture.naming_example` ("what
    color is the <shape> ?"); "band" names the row or the column band of one of 1-4 objects of distinct shapes
    ("is the circle upper middle or lower ?" -> "upper"; "... left center or right ?" -> "center"), one object
    per cell whatever `copies` says."""
    from ospo.shapeworld.pretrain import mixture
    from ospo.shapeworld.world import COL_BANDS, ROW_BANDS

    if kind == "color":
        return (*mixture.naming_example(rng, copies), "name")
    scene = mixture.distinct_shapes_scene(rng, 1, 4)
    thing = mixture.pick(rng, scene.objects)
    bands, value = (ROW_BANDS, thing.row) if rng.random() < 0.5 else (COL_BANDS, thing.col)
    answer = next(name for name, cells in bands.items() if value in cells)
    first, second, third = bands
    return scene, f"is the {thing.shape} {first} {second} or {third} ?", answer, "name"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--tokens", choices=("aligner", "words", "words+position", "realign", "realign+position"),
                    default="aligner")
    ap.add_argument("--copies", type=int, default=1)
    ap.add_argument("--questions", choices=(*YES_NO_FIND_QUESTIONS, "relation", "left-right", "left-of"),
                    default="shape")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--align-steps", type=int, default=300)
    ap.add_argument("--align-vision", action="store_true",
                    help="realign: train the vision tower too , not the aligner alone")
    ap.add_argument("--freeze-aligner", action="store_true", help="train the LM only, not the aligner")
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--eval-size", type=int, default=300)
    ap.add_argument("--order", choices=("image-first", "question-first"), default="image-first",
                    help="where the question goes in the user turn (the pipeline's template puts the image first)")
    ap.add_argument("--name-steps", type=int, default=0,
                    help="first train this many steps on naming (--name-kind) before the yes/no questions")
    ap.add_argument("--name-kind", choices=("color", "band"), default="color",
                    help="what --name-steps names: the colour, or the row or column band of an object")
    ap.add_argument("--fp32", action="store_true", help="train without bfloat16 autocast (always, on a CPU without "
                    "native bf16: pretrain.native_bf16)")
    ap.add_argument("--token-scale", type=float, default=1.0,
                    help="multiply the image tokens by this (the LM's first layer adds vectors ~100x their norm)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    ap.add_argument("--save", default=None, help="save the trained model here (a checkpoint directory that "
                    "`ospo shapeworld pretrain --set init_from=DIR` can continue from)")
    args = ap.parse_args()
    if args.save and args.tokens.startswith("words"):
        ap.error("--save needs pixel tokens (--tokens aligner|realign|realign+position): a 'words' model reads the "
                 "scene, not the image")
    adapter = load_probe_model(args.model, args.threads)
    from ospo.shapeworld import codes as world_codes
    from ospo.shapeworld import pretrain
    from ospo.shapeworld.render import render

    model, tok = adapter.janus, adapter.tokenizer
    labels = pretrain.cell_labels()
    if args.tokens.startswith("realign"):
        cfg = replace(pretrain.PretrainConfig(), align_steps=args.align_steps, align_target="words",
                      threads=args.threads)
        with tempfile.TemporaryDirectory() as state:
            aligned = aligner.train_aligner(model, adapter.processor, cfg, Path(state),
                                            position=args.tokens == "realign+position", train_vision=args.align_vision)
        print(f"aligner re-trained: {aligned}", flush=True)
    table = pretrain.word_targets(model, tok)
    current = {}
    if args.tokens.startswith("words"):
        scale = float(args.tokens == "words+position")

        def exact_tokens(module, inputs, output):
            return aligner.aligned_tokens(table, current["labels"], scale).to(output.dtype)
        model.model.aligner.register_forward_hook(exact_tokens)

    if args.token_scale != 1.0:
        model.model.aligner.register_forward_hook(lambda module, inputs, output: output * args.token_scale)

    params = pretrain.lm_parameters(model, freeze_vision=True, freeze_aligner=args.freeze_aligner)
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
    yes_id, no_id = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
    from ospo.shapeworld.world import COL_BANDS, COLORS, ROW_BANDS
    name_words = list(COLORS) if args.name_kind == "color" else [*ROW_BANDS, *COL_BANDS]
    name_ids = torch.tensor(tok.convert_tokens_to_ids(name_words))  # a naming answer: argmax over these words

    def encode(batch, with_answer: bool):
        current["labels"] = labels[torch.from_numpy(np.stack([world_codes.scene_to_codes(b[0]) for b in batch]))]
        texts = []
        for _, question, answer, _ in batch:
            content = [{"type": "image"}, {"type": "text", "text": question}]
            conv = [{"role": "user", "content": content if args.order == "image-first" else content[::-1]}]
            conv += [{"role": "assistant", "content": answer}] if with_answer else []
            texts.append(adapter.processor.apply_chat_template(conv, add_generation_prompt=not with_answer))
        return adapter.processor(text=texts, images=[render(b[0]) for b in batch], return_tensors="pt", padding=True)

    rng = np.random.default_rng([7, 11])
    held_out = [one_object_example(rng, args.questions) for _ in range(args.eval_size)]
    if args.name_steps:
        held_out += [naming_example(rng, kind=args.name_kind) for _ in range(args.eval_size // 3)]

    @torch.no_grad()
    def evaluate() -> dict:
        model.eval()
        hits = []
        for i in range(0, len(held_out), 50):
            chunk = held_out[i:i + 50]
            logits = model(**encode(chunk, False), logits_to_keep=1).logits[:, -1]
            for lg, b in zip(logits, chunk):
                if b[3] == "name":
                    hits.append((int(name_ids[lg[name_ids].argmax()]) == tok.convert_tokens_to_ids(b[2]), "name"))
                else:
                    hits.append(((float(lg[yes_id]) > float(lg[no_id])) == (b[2] == "yes"), b[3]))
        out = {"all": float(np.mean([h for h, k in hits if k != "name"]))}
        out.update({k: float(np.mean([h for h, kk in hits if kk == k])) for k in sorted({k for _, k in hits})})
        return out

    rows = [{"step": 0, **evaluate()}]
    print(f"step 0: {rows[-1]}", flush=True)
    t0 = time.time()
    total = args.name_steps + args.steps
    for step in range(total):
        model.train()
        naming = step < args.name_steps
        stage_step, stage_steps = (step, args.name_steps) if naming else (step - args.name_steps, args.steps)
        copies = pretrain.curriculum_copies(max(1, int(0.7 * stage_steps)), args.copies, stage_step)
        rng = np.random.default_rng([1, 77, step])
        batch = [naming_example(rng, copies, args.name_kind) if naming else one_object_example(rng, args.questions, copies)
                 for _ in range(args.batch)]
        enc = encode(batch, True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=not args.fp32 and native_bf16()):
            logits = model(**enc, logits_to_keep=3).logits[:, 0]  # the position that predicts the answer
        loss = F.cross_entropy(logits.float(), torch.tensor(tok.convert_tokens_to_ids([b[2] for b in batch])))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if (step + 1) % args.eval_every == 0 or step + 1 in (args.name_steps, total):
            rows.append({"step": step + 1, "copies": copies, "loss": loss.item(), **evaluate()})
            print(f"step {step + 1} ({time.time() - t0:.0f}s): {rows[-1]}", flush=True)

    print(f"\n## One-object yes/no: tokens={args.tokens}, copies={args.copies}, questions={args.questions}, "
          f"model={args.model or 'shipped'}\n")
    print(markdown_table(rows, "step"))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    if args.save:
        model.save_pretrained(args.save)
        adapter.processor.save_pretrained(args.save)
        print(f"saved to {args.save}")


if __name__ == "__main__":
    main()

"""Can the language model learn a spatial relation, and in what order? The LM alone, on exact image tokens.

    python -m experiments.relation_probe [--model DIR] [--phases left-of:600,left-right:600] [--position 1.0]
                                        [--batch 32] [--lr 1e-3] [--eval-every 150] [--json out.json]

Trains the language model of a ShapeWorld Janus on yes/no questions about two objects of distinct shapes on
one row ("is the circle left of the square ?"), phase after phase, and prints held-out accuracy (300
questions per phase kind, drawn apart from the training stream) every `--eval-every` steps. The image tokens
are exact, not read from pixels: each cell's token is the sum of the LM's input embeddings of its shape,
colour, texture and background words (`pretrain.word_targets`), plus `--position` times a fixed code of the
cell's row and column (`experiments.aligner.aligned_tokens`: `cell_position_code` scaled to the word sums' mean norm; 0 =
no code). The vision tower and the image processor never run, so a step costs the LM's forward and backward
alone (`experiments.vqa_probe --tokens words+position --questions left-of` asks the same of the full model).

Phase kinds:
- `left-of`: always "left of"; yes when the first object is left of the second (a fair coin by placement).
  The first object's column alone predicts the answer (leftmost column: always yes).
- `left-right[~P]`: "right of" with probability P (default 0.5, a fair coin), else "left of", independently of
  the placement. At 0.5 no single thing the model can read (either column, the relation word) says anything
  about the answer: only their combination does, an XOR, which gradient descent finds last if at all.

It isolates why the shipped model's relation answers sit at chance (docs/experiments/relations.md).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from experiments import aligner
from experiments.probes import load_probe_model
from benchmarks.tables import markdown_table
from ospo.shapeworld.pretrain.find import left_right_example
from ospo.shapeworld import pretrain

KINDS = ("left-of", "left-right")


def parse_phases(text: str) -> list[tuple[str, float, int]]:
    """"left-of:600,left-right~0.2:300" -> [("left-of", 0.0, 600), ("left-right", 0.2, 300)]: (kind, share of
    "right of" questions, steps); a plain "left-right" asks "right of" half the time."""
    phases = []
    for part in text.split(","):
        head, _, steps = part.partition(":")
        kind, tilde, share = head.partition("~")
        try:
            p_right = 0.0 if kind == "left-of" else float(share if tilde else 0.5)
            valid = (kind in KINDS and steps.isdecimal() and int(steps) > 0 and 0.0 <= p_right <= 1.0
                     and not (kind == "left-of" and tilde))
        except ValueError:
            valid = False
        if not valid:
            raise argparse.ArgumentTypeError(f"a phase is KIND[~P]:STEPS with KIND one of {KINDS} and P the share of "
                                             f"'right of' questions (left-right only), not {part!r}")
        phases.append((kind, p_right, int(steps)))
    return phases


def format_phases(phases: list[tuple[str, float, int]]) -> str:
    """The `--phases` text of `parse_phases`' result."""
    return ",".join(f"{kind}:{steps}" if kind == "left-of" else f"{kind}~{p_right}:{steps}"
                    for kind, p_right, steps in phases)


class ExactTokenLM:
    """The checkpoint's LM fed chat-formatted questions whose 64 image placeholders hold exact cell tokens."""

    def __init__(self, adapter, position_scale: float):
        from PIL import Image

        from ospo.shapeworld import tasks

        self.adapter, self.model, self.tok = adapter, adapter.janus, adapter.tokenizer
        self.table = pretrain.word_targets(self.model, self.tok)  # (shapes+1, colours+1, textures+1, bgs, width)
        self.labels = pretrain.cell_labels()  # (num_codes, 4)
        self.position_scale = position_scale
        self.templates = tasks.shapeworld_templates()
        self.image_id = self.model.config.image_token_id
        self._blank = Image.new("RGB", (128, 128))
        self._ids: dict[str, torch.Tensor] = {}

    def _prompt_ids(self, question: str) -> torch.Tensor:
        """Token ids of the question's chat prompt, image placeholders expanded (cached: the processor is slow)."""
        from ospo.shapeworld.pretrain import mixture

        if question not in self._ids:
            text = mixture.spaced(self.templates.vqa(question))
            conv = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
            text = self.adapter.processor.apply_chat_template(conv, add_generation_prompt=True)
            self._ids[question] = self.adapter.processor(text=[text], images=[self._blank],
                                                         return_tensors="pt")["input_ids"][0]
        return self._ids[question]

    def cells(self, examples) -> torch.Tensor:
        """(B, cells, 4) `cell_labels` rows of each example's scene."""
        from ospo.shapeworld import codes as world_codes

        return self.labels[torch.from_numpy(np.stack([world_codes.scene_to_codes(s) for s, _, _ in examples]))]

    def answer_logits(self, examples) -> torch.Tensor:
        """(B, vocab) next-token logits after the prompt of each (scene, question, answer)."""
        rows = [self._prompt_ids(q) for _, q, _ in examples]
        length = max(len(r) for r in rows)
        ids = torch.stack([F.pad(r, (length - len(r), 0), value=self.tok.pad_token_id) for r in rows])  # left pad
        mask = torch.stack([F.pad(torch.ones_like(r), (length - len(r), 0)) for r in rows])
        tokens = aligner.aligned_tokens(self.table, self.cells(examples), self.position_scale)  # (B, cells, width)
        embeds = self.model.get_input_embeddings()(ids)
        slots = (ids == self.image_id)[..., None]
        if int(slots.sum()) != tokens.shape[0] * tokens.shape[1]:  # masked_scatter would not notice
            raise ValueError(f"{int(slots.sum())} image slots for {tokens.shape[0]} x {tokens.shape[1]} tokens")
        embeds = embeds.masked_scatter(slots, tokens.to(embeds.dtype).reshape(-1, tokens.shape[-1]))
        hidden = self.model.model.language_model(inputs_embeds=embeds, attention_mask=mask,
                                                 use_cache=False).last_hidden_state
        return self.model.lm_head(hidden[:, -1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--phases", type=parse_phases, default=parse_phases("left-of:600,left-right:600"))
    ap.add_argument("--position", type=float, default=1.0, help="scale of the cell position code (0 = none)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--eval-every", type=int, default=150)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    adapter = load_probe_model(args.model, args.threads)
    lm = ExactTokenLM(adapter, args.position)
    model, tok = adapter.janus, adapter.tokenizer
    yes_no = torch.tensor(tok.convert_tokens_to_ids(["yes", "no"]))
    for p in model.parameters():
        p.requires_grad_(False)
    params = [p for n, p in model.named_parameters() if n.startswith(("model.language_model.", "lm_head."))]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
    held_out = {kind: [left_right_example(np.random.default_rng([9, i]), 0.0 if kind == "left-of" else 0.5)
                       for i in range(300)] for kind in KINDS}

    @torch.no_grad()
    def accuracy(kind: str) -> float:
        said_yes = lm.answer_logits(held_out[kind])[:, yes_no].argmax(-1) == 0
        return float(np.mean([bool(s) == (a == "yes") for s, (_, _, a) in zip(said_yes.tolist(), held_out[kind])]))

    rows, step, t0 = [], 0, time.time()
    for kind, p_right, steps in args.phases:
        if step == 0:
            rows.append({"step": 0, "phase": kind, **{k: accuracy(k) for k in KINDS}})
            print(rows[-1], flush=True)
        model.train()  # no dropout in these checkpoints; said for the day one has it
        for phase_step in range(steps):
            rng = np.random.default_rng([1, step])
            batch = [left_right_example(rng, p_right) for _ in range(args.batch)]
            target = torch.tensor(tok.convert_tokens_to_ids([a for _, _, a in batch]))
            loss = F.cross_entropy(lm.answer_logits(batch).float(), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            step += 1
            if (phase_step + 1) % args.eval_every == 0 or phase_step + 1 == steps:
                model.eval()
                rows.append({"step": step, "phase": kind, "loss": round(loss.item(), 3),
                             **{k: accuracy(k) for k in KINDS}, "seconds": round(time.time() - t0)})
                print(rows[-1], flush=True)
                model.train()

    phases = format_phases(args.phases)
    print(f"\n## Relations on exact tokens: phases {phases}, position {args.position}, batch {args.batch}, "
          f"lr {args.lr}, model {args.model or 'shipped'}\n")
    print(markdown_table(rows, "step"))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": {**vars(args), "phases": phases}, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()

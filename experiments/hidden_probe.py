"""Where does the language model lose an object's colour? Linear probes on its hidden states, layer by layer.

    python -m experiments.hidden_probe [--model DIR] [--scenes 600] [--json out.json]

Asks a ShapeWorld Janus "is there a <colour> <shape> ?" about one-object scenes (the colour and shape of
the question drawn independently of the object's) and keeps every layer's hidden state at two places: the
last prompt position, which predicts the answer, and the object's cell among the 64 image tokens. A linear
classifier per layer and place (trained on the first two thirds of the scenes, scored on the rest) says
which attributes can be read there: the question's colour and shape at the answer position (the judge has
read the question), the object's colour and shape at the answer position (it has fetched the object), and
the object's colour and shape at its cell (the image token still carries them), and the object's column and
row at its cell, there and in the vision tower's output (whether a token says where it is: relations need
it, experiments.relation_probe). Chance is 0.1 for a colour, 0.2 for a shape, 0.125 for a row or column. The
mean norm of the cell's hidden state shows how much each layer writes over the image token it started from.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from experiments.probes import load_probe_model
from benchmarks.tables import markdown_table


def linear_probe(x: torch.Tensor, y: torch.Tensor, classes: int, train: int, steps: int = 300) -> float:
    """Held-out accuracy of a softmax classifier on standardised features (rows >= `train` are held out)."""
    mean, std = x[:train].mean(0), x[:train].std(0) + 1e-5
    x = (x - mean) / std
    w = torch.zeros(x.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=1e-2)
    for _ in range(steps):
        loss = F.cross_entropy(x[:train] @ w + b, y[:train]) + 1e-3 * w.pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(((x[train:] @ w + b).argmax(1) == y[train:]).float().mean())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="checkpoint directory (default: the shipped ShapeWorld model)")
    ap.add_argument("--scenes", type=int, default=600)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    adapter = load_probe_model(args.model, args.threads)
    from ospo.shapeworld import tasks
    from ospo.shapeworld.pretrain import mixture
    from ospo.shapeworld.captions import ObjectClause
    from ospo.shapeworld.questions import Question, question_text
    from ospo.shapeworld.render import render
    from ospo.shapeworld.world import COLORS, GRID, SHAPES

    model = adapter.janus.eval()
    colours = list(COLORS)
    rng = np.random.default_rng(0)
    items = []
    for _ in range(args.scenes):
        scene = mixture.random_scene(rng, 1)
        colour, shape = colours[rng.integers(len(colours))], SHAPES[rng.integers(len(SHAPES))]
        text = question_text(Question("exists", ObjectClause(shape, 1, colour)))
        items.append((scene, mixture.spaced(tasks.shapeworld_templates().vqa(text)), colour, shape))

    at_answer, at_cell, at_tower = [], [], []
    seen = {}  # the tower's output of the model's own forward: no second pass through the tower
    model.model.vision_model.register_forward_hook(lambda m, i, out: seen.update(tower=out.last_hidden_state))
    image_token = model.config.image_token_id
    with torch.no_grad():
        for i in range(0, len(items), args.batch):
            chunk = items[i:i + args.batch]
            texts = [adapter.processor.apply_chat_template(
                [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}],
                add_generation_prompt=True) for _, q, _, _ in chunk]
            enc = adapter.processor(text=texts, images=[render(s) for s, *_ in chunk], return_tensors="pt",
                                    padding=True)
            states = torch.stack(model(**enc, output_hidden_states=True).hidden_states, 1)  # (B, L+1, T, D)
            tower = seen["tower"]  # (B, cells, Dv)
            for j, (scene, *_rest) in enumerate(chunk):
                thing = scene.objects[0]
                cells = (enc["input_ids"][j] == image_token).nonzero().flatten()
                at_answer.append(states[j, :, -1])
                at_cell.append(states[j, :, cells[thing.row * GRID + thing.col]])
                at_tower.append(tower[j, thing.row * GRID + thing.col])
    at_answer, at_cell = torch.stack(at_answer).float(), torch.stack(at_cell).float()
    at_tower = torch.stack(at_tower).float()
    labels = {
        "question colour": [colours.index(c) for _, _, c, _ in items],
        "question shape": [SHAPES.index(s) for _, _, _, s in items],
        "object colour": [colours.index(s.objects[0].color) for s, *_ in items],
        "object shape": [SHAPES.index(s.objects[0].shape) for s, *_ in items],
    }
    places = {"object column": [s.objects[0].col for s, *_ in items],
              "object row": [s.objects[0].row for s, *_ in items]}
    classes = {"colour": len(colours), "shape": len(SHAPES)}
    train = 2 * len(items) // 3
    rows = []
    for layer in range(at_answer.shape[1]):
        row = {"layer": layer}
        for name, y in labels.items():
            k = classes[name.split()[-1]]
            row[f"answer: {name}"] = linear_probe(at_answer[:, layer], torch.tensor(y), k, train)
            if name.startswith("object"):
                row[f"cell: {name}"] = linear_probe(at_cell[:, layer], torch.tensor(y), k, train)
        for name, y in places.items():
            row[f"cell: {name}"] = linear_probe(at_cell[:, layer], torch.tensor(y), GRID, train)
        row["cell norm"] = float(at_cell[:, layer].norm(dim=-1).mean())
        rows.append(row)
    tower_row = {name: linear_probe(at_tower, torch.tensor(y), GRID, train) for name, y in places.items()}

    print(f"\n## Linear probes on hidden states (model={args.model or 'shipped'}, {len(items)} scenes, "
          f"{len(items) - train} held out; chance: colour 0.10, shape 0.20; layer 0 = input embeddings)\n")
    print(markdown_table(rows, "layer", digits=2))
    print(f"\nThe vision tower's output at the object's cell (what the aligner reads; chance {1 / GRID:.3f}): "
          + ", ".join(f"{name} {acc:.2f}" for name, acc in tower_row.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows, "tower": tower_row}, indent=1))


if __name__ == "__main__":
    main()

"""Random ShapeWorld specs and exact scenes that realise them.

Every draw takes an explicit numpy Generator, so callers seed from (run seed, item id, slot).
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import numpy as np

from ospo.shapeworld.captions import (
    SUBCATEGORIES, CaptionError, ObjectClause, Relation, Spec, caption, clause_text,
)
from ospo.shapeworld.world import (
    BACKGROUNDS, COLORS, MAX_COUNT, RELATIONS, SHAPES, TEXTURES, Obj, Scene, region_cells, region_of,
    relation_holds_cleanly,
)


def _pick(rng: np.random.Generator, items, k: int) -> list:
    """k distinct items of `items`, in random order."""
    items = list(items)
    return [items[i] for i in rng.choice(len(items), size=k, replace=False)]


def _coin(rng: np.random.Generator) -> bool:
    return bool(rng.integers(2))


def sample_spec(rng: np.random.Generator, subcategory: str) -> Spec:
    """A random spec of `subcategory` (short form: no background, no regions).

    Shapes within a spec are distinct; so are the colours of a two-object attribute prompt and
    the textures of texture2. Textures may come with colours ("a striped red circle").
    """
    if subcategory not in SUBCATEGORIES:
        raise CaptionError(f"unknown subcategory {subcategory!r}; expected one of {', '.join(SUBCATEGORIES)}")
    shapes, colors, textures = _pick(rng, SHAPES, 3), _pick(rng, COLORS, 3), _pick(rng, TEXTURES, 3)
    n = 1 if subcategory.endswith("1") else 3 if subcategory == "complex" else 2
    use_color = {"color1": True, "color2": True, "complex": True}.get(subcategory, _coin(rng))
    use_texture = subcategory.startswith("texture")
    clauses, relation = [], None
    for i in range(n):
        texture = textures[i] if use_texture or (subcategory == "complex" and _coin(rng)) else None
        color = colors[i] if use_color and not subcategory.startswith(("object", "numeracy")) else None
        clauses.append(ObjectClause(shapes[i], 1, color, texture))
    if subcategory.startswith("numeracy"):
        counts = [int(rng.integers(2, MAX_COUNT + 1))] + [int(rng.integers(1, MAX_COUNT + 1)) for _ in clauses[1:]]
        order = rng.permutation(len(counts))  # the clause with count >= 2 is not always the first
        clauses = [replace(c, count=counts[j]) for c, j in zip(clauses, order)]
    if subcategory in ("spatial", "complex"):
        relation = Relation(RELATIONS[int(rng.integers(len(RELATIONS)))])
    if subcategory == "complex":
        clauses[2] = replace(clauses[2], count=int(rng.integers(1, MAX_COUNT)))
    spec = Spec(tuple(clauses), relation)
    assert spec.subcategory == subcategory, (subcategory, spec)
    return spec


@lru_cache(maxsize=None)
def _clean_pairs(kind: str) -> tuple[tuple[tuple[int, int], tuple[int, int]], ...]:
    cells = region_cells(None)
    return tuple((a, b) for a in cells for b in cells if relation_holds_cleanly(kind, a, b))


def sample_scene(spec: Spec, rng: np.random.Generator) -> Scene:
    """A scene that makes `spec` true and holds nothing else.

    Every clause gets exactly `count` objects, in its region when one is given, with its colour
    and texture (uniformly random where the spec leaves them open). Related objects are placed
    so that the relation holds and no other direction does (see `relation_holds_cleanly`). No
    distractors are added, so counts are exact. Raises CaptionError when the regions leave no room.
    """
    background = spec.background or _pick(rng, BACKGROUNDS, 1)[0]
    cells: dict[int, list[tuple[int, int]]] = {}
    if spec.relation is not None:
        rel = spec.relation
        allowed_a = set(region_cells(spec.objects[rel.subject].region))
        allowed_b = set(region_cells(spec.objects[rel.object].region))
        pairs = [(a, b) for a, b in _clean_pairs(rel.kind) if a in allowed_a and b in allowed_b]
        if not pairs:
            raise CaptionError(f"no placement makes {rel.kind!r} hold within the given regions: {caption(spec)!r}")
        a, b = pairs[int(rng.integers(len(pairs)))]
        cells[rel.subject], cells[rel.object] = [a], [b]
    taken = {cell for placed in cells.values() for cell in placed}
    objects = []
    for i, clause in enumerate(spec.objects):
        if i not in cells:
            free = [cell for cell in region_cells(clause.region) if cell not in taken]
            if len(free) < clause.count:
                raise CaptionError(f"region {clause.region!r} has no room for {clause_text(clause)!r}")
            cells[i] = _pick(rng, free, clause.count)
            taken.update(cells[i])
        for row, col in cells[i]:
            color = clause.color or _pick(rng, COLORS, 1)[0]
            texture = clause.texture or _pick(rng, TEXTURES, 1)[0]
            objects.append(Obj(clause.shape, color, texture, row, col))
    return Scene(tuple(objects), background)


def densify(spec: Spec, rng: np.random.Generator) -> Spec:
    """`spec` with a background and, per clause, the region its objects fall in (dense form).

    The context is read off a sampled scene, so it is always realisable; a clause whose objects
    span several regions keeps no region.
    """
    scene = sample_scene(spec, rng)
    regions = []
    for clause in spec.objects:
        found = {region_of(o.row, o.col) for o in scene.objects if o.shape == clause.shape}
        regions.append(found.pop() if len(found) == 1 else None)
    return with_context(spec, scene.background, tuple(regions))


def with_context(spec: Spec, background: str | None, regions: tuple[str | None, ...]) -> Spec:
    """`spec` with the given background and one region per clause (how a pair shares context)."""
    if len(regions) != len(spec.objects):
        raise CaptionError(f"expected {len(spec.objects)} regions, got {len(regions)}")
    clauses = tuple(replace(c, region=r) for c, r in zip(spec.objects, regions))
    return Spec(clauses, spec.relation, background)

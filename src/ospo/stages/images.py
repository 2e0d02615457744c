"""Stage 2.3 — paired image generation.

For every DensePair `(d_i, d~_i)` one image is drawn from the dense positive and one from the dense negative
with the same seed `item_seed(run seed, pair id, 0)`, so the two images share their random draws and differ
where the prompts differ. The sampled code ids are the training input: they are stored exactly as drawn, in
one safetensors file per chunk (`codes/<chunk>.safetensors`, keyed by image id), never re-encoded from a PNG.
PNG previews (`previews/<image file name>.png`) are for humans and for the understanding branch (stage 3.2).

Write order per chunk: codes file, then previews, then the chunk's part file, each atomically; so a part file
implies its codes and previews exist, and a killed run redoes only chunks without a part file (with the same
seeds, hence the same codes).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ospo.artifacts import (ArtifactError, StageDir, atomic_write_bytes, bytes_hash, file_hash, load_codes, load_image,
                            save_codes)
from ospo.errors import InputError
from ospo.records import DensePair, Image, Rejected, id_to_filename
from ospo.sampling import ImageSampling, item_seed
from ospo.stages import RunContext, chunked, run_chunked
from ospo.stages._shared import finish, start

NAME = "images"
ROLES = ("positive", "negative")


# ------------------------------------------------------------------------------------------------ pure core
def image_requests(pairs: list[DensePair], run_seed: int) -> tuple[list[tuple[str, DensePair, str, str, int]],
                                                                   list[Rejected]]:
    """(image id, pair, role, prompt text, seed) for both images of every usable pair, plus the refused pairs.

    Both images of a pair get the seed of the pair: `item_seed(run_seed, pair.id, 0)`.
    """
    requests, refused = [], []
    for pair in pairs:
        texts = {"positive": pair.dense_positive, "negative": pair.dense_negative}
        empty = [role for role in ROLES if not texts[role].strip()]
        if empty:
            refused.append(Rejected(pair.id, NAME, "empty-dense-prompt", detail=f"empty {' and '.join(empty)}"))
            continue
        seed = item_seed(run_seed, pair.id, 0)
        requests += [(f"{pair.id}/{role}", pair, role, texts[role], seed) for role in ROLES]
    return requests, refused


def model_identity(model_cfg):
    """The model settings that shape a stage's output, for its identity: batch size and device do not (every draw
    is seeded per item), so a run may resume with another batch size."""
    import dataclasses

    return dataclasses.replace(model_cfg, batch_size=0, device="any")


# ------------------------------------------------------------------------------------------------ files
def _stage(stage_dir: StageDir | str | Path) -> StageDir:
    if isinstance(stage_dir, StageDir):
        return stage_dir
    path = Path(stage_dir)
    return StageDir(path.parent, path.name)


def codes_path(stage: StageDir, chunk_key: str) -> Path:
    return stage.path / "codes" / f"{chunk_key}.safetensors"


def preview_path(stage: StageDir, image_id: str) -> Path:
    return stage.path / "previews" / f"{id_to_filename(image_id)}.png"


def load_image_codes(stage_dir: StageDir | str | Path) -> dict[str, np.ndarray]:
    """All stored code ids of a finished images stage, keyed by image id: {id: (N,) int32}.

    Every code file is checked against the hash the manifest recorded when the stage finished, so a truncated
    or modified file is an ArtifactError naming it, never silently different training data.
    """
    stage = _stage(stage_dir)
    expected = stage.manifest().get("codes_files", {})
    codes: dict[str, np.ndarray] = {}
    for name, digest in sorted(expected.items()):
        path = stage.path / "codes" / name
        fix = f"delete {stage.path} and rerun the images stage (it regenerates the same codes)"
        if not path.is_file():
            raise ArtifactError(f"code file {path} is missing; {fix}")
        if file_hash(path) != digest:
            raise ArtifactError(f"code file {path} is corrupt (its hash differs from the manifest's); {fix}")
        for image_id, array in load_codes(path).items():
            if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
                raise ArtifactError(f"code file {path}: '{image_id}' is not a 1-D integer array; {fix}")
            codes[image_id] = array
    missing = [r.id for r in stage.records() if isinstance(r, Image) and r.id not in codes]
    if missing:
        raise ArtifactError(f"{stage.path}: {len(missing)} images have no stored codes (first: {missing[0]}); "
                            f"delete {stage.path} and rerun the images stage")
    return codes


def load_preview(stage_dir: StageDir | str | Path, image_id: str):
    """The PNG preview of an image as an RGB PIL image; InputError naming the file if missing or unreadable."""
    return load_image(preview_path(_stage(stage_dir), image_id))


class Pictures:
    """The pictures of a finished images stage, as the judge sees them: its PNG previews, or, for a stage run with
    `images.previews: false`, its codes decoded in memory (the same pixels: PNG is lossless)."""

    def __init__(self, stage_dir: StageDir | str | Path, model, previews: bool):
        self.stage, self.model, self.previews, self._codes = _stage(stage_dir), model, previews, None

    def __call__(self, image_id: str, sha: str = ""):
        """The picture of `image_id`; with the preview's recorded `sha`, an ArtifactError when the file differs."""
        if self.previews:
            path = preview_path(self.stage, image_id)
            if sha and path.is_file() and file_hash(path) != sha:
                raise ArtifactError(f"{path} changed after its stage finished (its hash differs from its image "
                                    f"record's); delete {self.stage.path} and rerun the images stage (it draws the "
                                    "same images)")
            return load_preview(self.stage, image_id)
        if self._codes is None:  # every code file, hash-checked, once per process
            self._codes = load_image_codes(self.stage)
        if image_id not in self._codes:
            raise InputError(f"{self.stage.path}: no stored codes for image {image_id}")
        return self.model.decode_images(np.asarray(self._codes[image_id], dtype=np.int64)[None])[0]


def _png_bytes(picture) -> bytes:
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ shell
def _generate_chunk(model, stage: StageDir, key: str, pairs: list[DensePair], run_seed: int,
                    sampling: ImageSampling, previews: bool = True) -> list:
    requests, refused = image_requests(pairs, run_seed)
    if not requests:
        save_codes(codes_path(stage, key), {})
        return refused
    tokens = model.generate_image_tokens([r[3] for r in requests], [r[4] for r in requests], sampling)
    codes = tokens.codes.cpu().numpy()  # (2P, N)
    mean_logps = tokens.logps.float().mean(-1).tolist()  # (2P,) l(y | dense prompt), cond branch
    save_codes(codes_path(stage, key), {r[0]: row for r, row in zip(requests, codes)})
    shas = {}
    if previews:  # each PNG's hash goes into its record, so a reader sees a preview changed after it was written
        for (image_id, *_), picture in zip(requests, model.decode_images(tokens.codes)):
            png = _png_bytes(picture)
            atomic_write_bytes(preview_path(stage, image_id), png)
            shas[image_id] = bytes_hash(png)
    images = [Image(id=image_id, pair_id=pair.id, prompt_id=pair.prompt_id, slot=pair.slot, role=role, prompt=text,
                    seed=seed, mean_logp=float(lp), preview_sha=shas.get(image_id, ""))
              for (image_id, pair, role, text, seed), lp in zip(requests, mean_logps)]
    return images + refused


def run(ctx: RunContext) -> dict:
    """Generates the paired images of every DensePair of stage 'densify'; returns the manifest."""
    cfg = ctx.config
    stage = start(ctx, NAME, [cfg.images, model_identity(cfg.model)], ["densify"], True, chunk_size=cfg.chunk_size)
    if stage.complete:
        return stage.manifest()
    pairs = sorted((r for r in ctx.stage("densify").records() if isinstance(r, DensePair)), key=lambda r: r.id)
    chunks = chunked(pairs, cfg.chunk_size)
    key_of = {items[0].id: key for key, items in chunks}
    i = cfg.images
    sampling = ImageSampling(cfg_scale=i.cfg_scale, temperature=i.temperature, top_k=i.top_k, top_p=i.top_p)
    run_chunked(ctx, stage, chunks, lambda items: _generate_chunk(ctx.model, stage, key_of[items[0].id], items,
                                                                   cfg.seed, sampling, i.previews), desc="images")

    def manifest() -> dict:
        missing = [str(codes_path(stage, key)) for key, _ in chunks if not codes_path(stage, key).is_file()]
        if missing:
            raise ArtifactError(f"code file {missing[0]} is missing although its chunk is done; delete "
                                f"{stage.path} and rerun the images stage")
        files = {codes_path(stage, key).name: file_hash(codes_path(stage, key)) for key, _ in chunks}
        return {"counts": {"in": len(pairs)}, "codes_files": files,
                "sampling": {"cfg_scale": i.cfg_scale, "temperature": i.temperature, "top_k": i.top_k,
                             "top_p": i.top_p}}

    return finish(ctx, stage, manifest)

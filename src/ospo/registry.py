"""Checkpoints and image-code decoders that installed packages provide by name, through entry points.

The loop and the adapter name no world and no model family: a package declares, in its packaging metadata,
- `ospo.checkpoints`: NAME -> a function returning the checkpoint's directory, so `--model NAME` and
  `model.path: NAME` load it;
- `ospo.code_decoders`: NAME -> a function from one row of image codes to an (H, W, 3) uint8 array, used by the
  adapter in place of the VQ decoder for checkpoints whose config sets `ospo_code_decoder: NAME`.
ospo's own ShapeWorld package registers both under the name "shapeworld" (pyproject.toml).
"""

from __future__ import annotations

import functools
from importlib.metadata import entry_points

from ospo.errors import ModelLoadError

CHECKPOINTS = "ospo.checkpoints"
CODE_DECODERS = "ospo.code_decoders"


@functools.cache
def _group(group: str) -> dict:
    return {ep.name: ep for ep in entry_points(group=group)}


def checkpoint_names() -> list[str]:
    return sorted(_group(CHECKPOINTS))


def resolve_model_path(path: str) -> str:
    """A registered checkpoint name becomes its directory; anything else (a directory, a hub id) is returned as is."""
    entry = _group(CHECKPOINTS).get(str(path))
    return str(entry.load()()) if entry is not None else str(path)


def code_decoder(name: str):
    """The decoder registered as `name`; a ModelLoadError names what is missing when none is installed."""
    entry = _group(CODE_DECODERS).get(name)
    if entry is None:
        raise ModelLoadError(f"the checkpoint decodes its image codes with '{name}', which no installed package "
                             f"provides (entry point group {CODE_DECODERS}: {sorted(_group(CODE_DECODERS))})")
    return entry.load()

"""ShapeWorld: a synthetic compositional world with an exact oracle.

The pure world (no torch, nothing of the loop): world, captions, sampler, render, codes, oracle,
questions, edits, tasks, evalsets. Built on it: evaluate (a model scored with the oracle) and pretrain/ (making the
tiny ShapeWorld Janus). The loop reaches the world only through what it registers (pyproject's entry points: the
shipped checkpoint's name and its code decoder) and through config data (the shipped shapeworld config's
`prompts.exclude_files`)."""

from pathlib import Path


def checkpoint_path() -> Path:
    """The tiny ShapeWorld Janus shipped inside the package (`ospo shapeworld pretrain` reproduces it)."""
    return Path(__file__).parent / "checkpoint"

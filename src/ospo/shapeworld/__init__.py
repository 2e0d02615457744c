"""ShapeWorld: a synthetic compositional world with an exact oracle (numpy and PIL only)."""

from pathlib import Path


def checkpoint_path() -> Path:
    """The tiny ShapeWorld Janus shipped inside the package (`ospo shapeworld pretrain` reproduces it)."""
    return Path(__file__).parent / "checkpoint"

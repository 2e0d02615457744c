"""Reading and writing artifacts: atomic writes, code arrays keyed by image id, images with clear errors."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from ospo.errors import InputError, OspoError


class ArtifactError(OspoError):
    """An artifact that cannot be read or written; the message names the file."""


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Writes `data` to a temporary file beside `path`, fsyncs, then renames: readers see the old file or the
    whole new one, never a truncated one. Raises ArtifactError naming the file on failure (disk full, read-only)."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
        raise ArtifactError(f"could not write {path}: {e.strerror or e}") from None


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_codes(path: str | Path, codes: dict) -> None:
    """Stores image code ids keyed by image id in a safetensors file (int32 arrays; no pickle)."""
    from safetensors.numpy import save

    arrays = {str(k): np.ascontiguousarray(np.asarray(v), dtype=np.int32) for k, v in codes.items()}
    atomic_write_bytes(path, save(arrays))


def load_codes(path: str | Path) -> dict[str, np.ndarray]:
    """Reads a safetensors file of code ids keyed by image id. Raises ArtifactError if missing or corrupt."""
    from safetensors.numpy import load

    path = Path(path)
    try:
        return dict(load(path.read_bytes()))
    except FileNotFoundError:
        raise ArtifactError(f"code file {path} does not exist") from None
    except Exception as e:  # safetensors raises its own SafetensorError on corrupt headers
        raise ArtifactError(f"code file {path} is corrupt: {e}") from None


def load_image(path: str | Path):
    """Opens an image as RGB, fully decoded, raising InputError naming the file if it is missing or corrupt."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"image {path} does not exist")
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise InputError(f"image {path} is not a readable image ({e})") from None

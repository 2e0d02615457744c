"""Reading and writing artifacts: atomic writes, code arrays keyed by image id, images with clear errors."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from ospo.errors import InputError, OspoError


class ArtifactError(OspoError):
    """An artifact that cannot be read or written; the message names the file."""


def _umask() -> int:
    """The process's file-creation mask (Linux reports it without changing it; elsewhere it is set and put back)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Writes `data` to a temporary file beside `path`, fsyncs, then renames: readers see the old file or the
    whole new one, never a truncated one. The file gets the mode a plain `open` would give it (0666 less the
    umask), not mkstemp's private 0600: exported images are read by scorers running as other users. Raises
    ArtifactError naming the file on failure (disk full, read-only)."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~_umask())
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
    except Image.DecompressionBombError as e:  # a small file that decodes to gigabytes
        raise InputError(f"image {path} is too large to decode ({e})") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise InputError(f"image {path} is not a readable image ({e})") from None


# ---------------------------------------------------------------------------------------------- run directories
class StageMismatch(OspoError):
    """A stage directory made with another config, model or inputs than the current run asks for."""


def output_folder(path: str | Path, option: str = "--out") -> Path:
    """`path` as a folder the command may write into, checked before any work (a long generation must not fail at
    its first write) and created by the caller when it writes: an InputError naming it when it is a file, or when
    it (or the nearest folder above it that exists, where it will be made) is not writable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{option} {path} is a file, not a folder")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{option} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{option} {path} is not writable" + ("" if existing == path else f" ({existing} is not)"))
    return path


def lines(text: str) -> list[str]:
    """The lines of a file's text, split at "\n" alone (a "\r" before it dropped). Not str.splitlines(): it also
    splits at U+2028, U+2029, U+0085 and other separators, which a record or prompt may hold inside its text (JSON
    written with ensure_ascii=False keeps them as they are)."""
    parts = text.split("\n")
    if parts[-1] == "":  # the newline that ends the last line starts no line
        parts.pop()
    return [line[:-1] if line.endswith("\r") else line for line in parts]


def prompt_rows(text: str, where: str, hint: str = "") -> list[dict]:
    """The rows of a JSON-lines prompt file (GenEval's metadata, exclusion lists): every non-empty line a JSON
    object with a "prompt" string; an InputError names the file and line otherwise (`hint` is added to that)."""
    rows = []
    for n, line in enumerate(lines(text), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{where}: line {n} is not JSON ({e.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise InputError(f"{where}: line {n} has no \"prompt\" string{hint}")
        rows.append(row)
    return rows


def read_jsonl(path: str | Path) -> list:
    """Records of a JSONL file written by `write_jsonl`."""
    from ospo.records import from_json

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist")
    out = []
    for n, line in enumerate(lines(path.read_text(encoding="utf-8")), 1):
        if line.strip():
            try:
                out.append(from_json(line))
            except (ValueError, KeyError, TypeError) as e:
                raise ArtifactError(f"{path}:{n} is not a valid record ({e})") from None
    return out


def write_jsonl(path: str | Path, records) -> None:
    from ospo.records import to_json

    atomic_write_text(path, "".join(to_json(r) + "\n" for r in records))


def bytes_hash(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()[:16]


def file_hash(path: str | Path) -> str:
    return bytes_hash(Path(path).read_bytes())


class StageDir:
    """One stage's folder in a run directory.

    Work is done in chunks; each finished chunk is one atomically written file `parts/<key>.jsonl` (records
    and Rejected records together), so a killed run loses at most the chunks in flight and a rerun skips
    finished ones. `finish` merges the parts, sorted by id, into `records.jsonl` and `rejected.jsonl` and writes
    `manifest.json` last: a stage is complete exactly when its manifest exists.
    """

    def __init__(self, run_dir: str | Path, name: str):
        self.name = name
        self.path = Path(run_dir) / name
        self.parts = self.path / "parts"

    # -- identity: what this stage's output depends on
    def claim(self, identity: dict) -> None:
        """Records (or checks) what the stage is computed from; refuses a directory made from something else."""
        path = self.path / "identity.json"
        if path.exists():
            old = json.loads(path.read_text())
            if old != identity:
                diff = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
                raise StageMismatch(f"stage '{self.name}' in {self.path.parent} was made with a different "
                                    f"{', '.join(diff)}; use a new run directory (or delete {self.path})")
            return
        try:
            self.parts.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # a read-only run directory: name the folder, as atomic writes name the file
            raise ArtifactError(f"could not create {self.parts}: {e.strerror or e}") from None
        atomic_write_text(path, json.dumps(identity, indent=1, sort_keys=True))

    # -- chunks
    def part_path(self, key: str) -> Path:
        return self.parts / f"{key}.jsonl"

    def has_part(self, key: str) -> bool:
        return self.part_path(key).exists()

    def write_part(self, key: str, records) -> None:
        write_jsonl(self.part_path(key), records)

    def read_parts(self) -> list:
        return [r for p in sorted(self.parts.glob("*.jsonl")) for r in read_jsonl(p)]

    # -- completion
    @property
    def complete(self) -> bool:
        return (self.path / "manifest.json").exists()

    def finish(self, manifest: dict) -> dict:
        """Merges the parts into records.jsonl / rejected.jsonl and writes the manifest last. `counts.out` is the
        number of records unless the stage counts its output itself (training writes no records: its pairs)."""
        from collections import Counter

        from ospo.records import Rejected

        everything = self.read_parts()
        ids = [r.id for r in everything]
        if len(ids) != len(set(ids)):
            raise ArtifactError(f"stage '{self.name}': duplicate ids in {self.parts}")
        records = sorted((r for r in everything if not isinstance(r, Rejected)), key=lambda r: r.id)
        rejected = sorted((r for r in everything if isinstance(r, Rejected)), key=lambda r: r.id)
        write_jsonl(self.path / "records.jsonl", records)
        write_jsonl(self.path / "rejected.jsonl", rejected)
        manifest = {**manifest, "stage": self.name,
                    "counts": {"out": len(records), **manifest.get("counts", {}), "rejected": len(rejected),
                               "rejected_by_reason": dict(Counter(r.reason for r in rejected))},
                    "records_hash": file_hash(self.path / "records.jsonl")}
        atomic_write_text(self.path / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True))
        return manifest

    def manifest(self) -> dict:
        if not self.complete:
            raise ArtifactError(f"stage '{self.name}' has not finished in {self.path.parent}; run it first")
        path = self.path / "manifest.json"
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as e:
            raise ArtifactError(f"{path} is not a readable manifest ({e}); delete {self.path} and rerun the stage "
                                "(it gives the same records)") from None
        if not isinstance(manifest, dict):
            raise ArtifactError(f"{path} is not a manifest (a JSON object); delete {self.path} and rerun the stage")
        return manifest

    def records(self) -> list:
        """The finished stage's records, checked against the hash its manifest recorded: a later stage never builds
        on a truncated or edited file."""
        expected = self.manifest().get("records_hash")
        path = self.path / "records.jsonl"
        if expected is not None and (not path.is_file() or file_hash(path) != expected):
            raise ArtifactError(f"{path} changed after its stage finished (its hash differs from {self.path}/"
                                f"manifest.json); delete {self.path} and rerun the stage (it gives the same records)")
        return read_jsonl(path)

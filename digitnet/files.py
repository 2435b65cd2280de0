"""Writing artefacts safely and checking them: atomic writes and SHA-256 digests."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from digitnet.errors import DigitnetError

# mkstemp makes files only their owner can read; an artefact gets the mode a plain open() would give
# it (0666 less the umask), so a model written by one user can be served or shared by another.
# Read once at import: os.umask can only be read by setting it.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def publish(tmp: str | Path, path: str | Path) -> None:
    """Give a finished temp file the usual mode and rename it onto `path` (atomic on one filesystem)."""
    os.chmod(tmp, 0o666 & ~_UMASK)
    os.replace(tmp, path)


def atomic_write_bytes(path: str | Path, payload: bytes) -> None:
    """Write to a temp file beside the target, fsync, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def sha256_bytes(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_json(path: str | Path, missing: str = "missing", invalid_hint: str = "") -> object:
    """Parse a JSON file; a missing or malformed file is a DigitnetError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DigitnetError(f"{path}: {missing}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DigitnetError(f"{path}: not valid JSON ({e}){invalid_hint}") from None

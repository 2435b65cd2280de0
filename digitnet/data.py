"""Datasets: a strict IDX reader, SHA-256 checks, where the files are found, and the downloader.

IDX needs no framework: a 4-byte magic (two zero bytes, a dtype code, the number of dimensions),
one big-endian uint32 per dimension, then the data. Files may be gzip-compressed; checksums are
always of the uncompressed bytes, since gzip wrappers differ between mirrors.

Lookup order for a dataset's folder: an explicit data_dir, $DIGITNET_DATA_DIR/<name>, the copy
shipped with the project (data/<name>), a system copy (Debian's dataset packages), the user cache
($XDG_CACHE_HOME/digitnet/<name>). Nothing is downloaded unless asked (`digitnet data download`).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitnet.errors import DigitnetError
from digitnet.files import atomic_write_bytes, publish

# IDX type codes -> big-endian NumPy dtypes (from the format's definition on LeCun's MNIST page).
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
# Refuse files that claim more than this many data bytes before allocating anything for them.
MAX_IDX_BYTES = 1 << 31
GZIP_MAGIC = b"\x1f\x8b"
CHUNK = 1 << 20


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    files: dict[str, tuple[str, str]]  # role -> (file name without .gz, SHA-256 of uncompressed bytes)
    mirrors: tuple[str, ...]  # base URLs serving <file>.gz, tried in order
    system_dirs: tuple[str, ...] = ()  # where an OS package installs the files
    class_names: tuple[str, ...] = tuple(str(d) for d in range(10))


DATASETS = {
    "mnist": DatasetSpec(
        name="mnist",
        files={
            "train_images": ("train-images-idx3-ubyte",
                             "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
            "train_labels": ("train-labels-idx1-ubyte",
                             "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
            "test_images": ("t10k-images-idx3-ubyte",
                            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
            "test_labels": ("t10k-labels-idx1-ubyte",
                            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
        },
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "https://storage.googleapis.com/cvdf-datasets/mnist/"),
    ),
    # Fashion-MNIST checksums: SHA-256 of the uncompressed files as Debian ships them.
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        files={
            "train_images": ("train-images-idx3-ubyte",
                             "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
            "train_labels": ("train-labels-idx1-ubyte",
                             "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
            "test_images": ("t10k-images-idx3-ubyte",
                            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
            "test_labels": ("t10k-labels-idx1-ubyte",
                            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
        },
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        system_dirs=("/usr/share/datasets/fashion-mnist",),  # Debian: dataset-fashion-mnist
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                     "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    ),
}

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "data"


def get_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        from digitnet.config import check_keys  # one place for "did you mean"

        check_keys([name], list(DATASETS), "dataset")
    return DATASETS[name]


# ---------------------------------------------------------------------------------------------
# IDX parsing


def parse_idx(stream: io.BufferedIOBase, source: str = "<bytes>", hasher=None) -> np.ndarray:
    """Read one IDX array from a binary stream, checking every header field and the byte count."""
    magic = _read_exactly(stream, 4, source, "the 4-byte magic number", hasher)
    if magic[0] != 0 or magic[1] != 0:
        raise DigitnetError(f"{source}: not an IDX file (magic {magic.hex()} should start with 0000)")
    code, ndim = magic[2], magic[3]
    if code not in IDX_DTYPES:
        raise DigitnetError(f"{source}: unknown IDX data type code 0x{code:02x} "
                            f"(valid: {', '.join(f'0x{c:02x}' for c in IDX_DTYPES)})")
    if ndim == 0:
        raise DigitnetError(f"{source}: IDX header says 0 dimensions")
    dims_raw = _read_exactly(stream, 4 * ndim, source, f"{ndim} dimension sizes", hasher)
    dims = tuple(int(d) for d in np.frombuffer(dims_raw, dtype=">u4"))
    dtype = np.dtype(IDX_DTYPES[code])
    nbytes = int(np.prod(dims, dtype=object)) * dtype.itemsize
    if nbytes > MAX_IDX_BYTES:
        raise DigitnetError(f"{source}: header claims shape {dims}, {nbytes:,} bytes; "
                            f"refusing anything over {MAX_IDX_BYTES:,}")
    body = _read_exactly(stream, nbytes, source, f"{nbytes:,} data bytes for shape {dims}", hasher)
    extra = stream.read(1)
    if extra:
        raise DigitnetError(f"{source}: trailing bytes after the {nbytes:,} data bytes "
                            f"for shape {dims}; the file is not a single IDX array")
    return np.frombuffer(body, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def _read_exactly(stream, n: int, source: str, what: str, hasher) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(min(CHUNK, n - len(buf)))
        if not chunk:
            raise DigitnetError(f"{source}: truncated: expected {what}, "
                                f"the file ended after {len(buf):,} of {n:,} bytes")
        buf += chunk
    if hasher is not None:
        hasher.update(buf)
    return bytes(buf)


def read_idx(path: str | Path, sha256: str | None = None) -> np.ndarray:
    """Read an IDX file (raw or .gz); when sha256 is given, the uncompressed bytes must match it."""
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            gz = raw.read(2) == GZIP_MAGIC
        hasher = hashlib.sha256()
        opener = gzip.open if gz else open
        with opener(path, "rb") as f:
            array = parse_idx(f, source=str(path), hasher=hasher)
    except FileNotFoundError:
        raise DigitnetError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DigitnetError(f"{path}: is a folder, expected an IDX file") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DigitnetError(f"{path}: corrupt gzip data ({e}); delete the file and fetch it again") from None
    except PermissionError:
        raise DigitnetError(f"{path}: permission denied") from None
    if sha256 is not None and hasher.hexdigest() != sha256:
        raise DigitnetError(f"{path}: SHA-256 of the uncompressed content is {hasher.hexdigest()}, "
                            f"expected {sha256}; the file is corrupt or not the official one")
    return array


def write_idx(path: str | Path, array: np.ndarray, compress: bool | None = None) -> None:
    """Write an array as IDX (gzip when the name ends in .gz), atomically."""
    path = Path(path)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in IDX_DTYPES.items()}
    dtype = np.dtype(array.dtype).newbyteorder("=")
    if dtype not in codes:
        raise DigitnetError(f"cannot write dtype {array.dtype} as IDX")
    header = bytes([0, 0, codes[dtype], array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    payload = header + np.ascontiguousarray(array, dtype=IDX_DTYPES[codes[dtype]]).tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    atomic_write_bytes(path, payload)


# ---------------------------------------------------------------------------------------------
# Finding and loading datasets


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "digitnet"


def candidate_dirs(name: str, data_dir: str | Path | None = None) -> list[tuple[str, Path]]:
    """Where a dataset is looked for, in order, each with a label saying why it is there."""
    spec = get_spec(name)
    if data_dir is not None:
        return [("--data-dir", Path(data_dir))]
    dirs = []
    if os.environ.get("DIGITNET_DATA_DIR"):
        dirs.append(("$DIGITNET_DATA_DIR", Path(os.environ["DIGITNET_DATA_DIR"]) / name))
    dirs.append(("shipped with digitnet", SHIPPED_DIR / name))
    dirs.extend(("system package", Path(d)) for d in spec.system_dirs)
    dirs.append(("user cache", cache_dir() / name))
    return dirs


def file_in(folder: Path, base: str) -> Path | None:
    for candidate in (folder / f"{base}.gz", folder / base):
        if candidate.is_file():
            return candidate
    return None


def locate(name: str, data_dir: str | Path | None = None) -> Path:
    """The first folder in lookup order that has all of a dataset's files."""
    spec = get_spec(name)
    tried = []
    for label, folder in candidate_dirs(name, data_dir):
        if all(file_in(folder, base) for base, _ in spec.files.values()):
            return folder
        tried.append(f"{folder} ({label})")
    raise DigitnetError(f"dataset {name!r} not found; looked in: {'; '.join(tried)}. "
                        f"Point --data-dir at a folder with the four IDX files, or run "
                        f"`digitnet data download {name}` to fetch them from the public mirrors")


def load_split(name: str, split: str, data_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Verified images (N, 28, 28) uint8 and labels (N,) int64 of the 'train' or 'test' split."""
    if split not in ("train", "test"):
        raise DigitnetError(f"split must be 'train' or 'test', got {split!r}")
    spec = get_spec(name)
    folder = locate(name, data_dir)
    img_base, img_sha = spec.files[f"{split}_images"]
    lbl_base, lbl_sha = spec.files[f"{split}_labels"]
    x = read_idx(file_in(folder, img_base), img_sha)
    y = read_idx(file_in(folder, lbl_base), lbl_sha)
    check_pair(x, y, f"{folder}/{split}", len(spec.class_names))
    return x, y.astype(np.int64)


def check_pair(x: np.ndarray, y: np.ndarray, source: str, num_classes: int = 10) -> None:
    """Images and labels must agree in count, shape and range before anything trains on them."""
    if x.ndim != 3 or x.shape[1:] != (28, 28) or x.dtype != np.uint8:
        raise DigitnetError(f"{source}: images must be uint8 of shape (N, 28, 28), got {x.dtype} {x.shape}")
    if y.ndim != 1 or y.dtype != np.uint8:
        raise DigitnetError(f"{source}: labels must be uint8 of shape (N,), got {y.dtype} {y.shape}")
    if len(x) != len(y):
        raise DigitnetError(f"{source}: {len(x)} images but {len(y)} labels")
    if len(y) and int(y.max()) >= num_classes:
        raise DigitnetError(f"{source}: label {int(y.max())} out of range 0-{num_classes - 1}")


def checksums(name: str) -> dict[str, str]:
    """File name -> expected SHA-256, as recorded in model.json."""
    return {base: sha for base, sha in get_spec(name).files.values()}


def verify(name: str, data_dir: str | Path | None = None) -> list[dict]:
    """Check every file of a dataset; returns one row per file (raises on the first bad one)."""
    spec = get_spec(name)
    folder = locate(name, data_dir)
    rows = []
    for base, sha in spec.files.values():
        path = file_in(folder, base)
        array = read_idx(path, sha)
        rows.append({"file": str(path), "shape": list(array.shape), "sha256": sha, "ok": True})
    return rows


# ---------------------------------------------------------------------------------------------
# Downloading (only when asked)


def download(name: str, dest: str | Path | None = None, mirrors: list[str] | None = None,
             progress: bool = True, timeout: float = 30.0) -> Path:
    """Fetch a dataset's files into dest (default: the user cache), verifying each before keeping it.

    Each file is tried on every mirror in order: a 404, a network error, a truncated or corrupt
    download moves on to the next mirror. A file is renamed into place only after its checksum holds.
    """
    spec = get_spec(name)
    dest = Path(dest) if dest is not None else cache_dir() / name
    mirrors = list(mirrors) if mirrors is not None else list(spec.mirrors)
    dest.mkdir(parents=True, exist_ok=True)
    for base, sha in spec.files.values():
        existing = file_in(dest, base)
        if existing is not None:
            try:
                read_idx(existing, sha)
                continue
            except DigitnetError:
                pass  # a bad cached copy is replaced below
        failures = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + f"/{base}.gz"
            try:
                _fetch_verified(url, dest / f"{base}.gz", sha, progress, timeout)
                break
            except DigitnetError as e:
                failures.append(f"{url}: {e}")
        else:
            raise DigitnetError(f"could not download {base}.gz from any mirror:\n  " + "\n  ".join(failures))
    return dest


def _fetch_verified(url: str, target: Path, sha: str, progress: bool, timeout: float) -> None:
    from tqdm import tqdm

    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    total = int(response.headers.get("Content-Length") or 0) or None
                    with tqdm(total=total, unit="B", unit_scale=True, desc=target.name,
                              disable=not progress, leave=False) as bar:
                        while chunk := response.read(CHUNK):
                            out.write(chunk)
                            bar.update(len(chunk))
                    if total is not None and out.tell() != total:
                        raise DigitnetError(f"truncated: got {out.tell():,} of {total:,} bytes")
            except urllib.error.HTTPError as e:
                raise DigitnetError(f"HTTP {e.code} {e.reason}") from None
            except (urllib.error.URLError, OSError) as e:
                raise DigitnetError(f"network error: {getattr(e, 'reason', e)}") from None
            out.flush()
            os.fsync(out.fileno())
        read_idx(tmp, sha)  # raises on a corrupt, truncated or wrong file
        publish(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)

"""The IDX reader, checksums and dataset lookup, on tiny synthetic files (and the shipped MNIST)."""
import gzip
import hashlib
import io
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digitnet import data
from digitnet.errors import DigitnetError


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    return bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, ">i2", ">i4", ">f4", ">f8"])
def test_round_trip(tmp_path, gz, dtype):
    rng = np.random.default_rng(0)
    array = (rng.random((5, 4, 3)) * 100).astype(dtype)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    data.write_idx(path, array)
    back = data.read_idx(path)
    np.testing.assert_array_equal(back, array)
    assert back.shape == (5, 4, 3)


def test_checksum_is_of_uncompressed_bytes(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = idx_bytes(array)
    sha = hashlib.sha256(raw).hexdigest()
    (tmp_path / "a.gz").write_bytes(gzip.compress(raw, compresslevel=1))
    (tmp_path / "b.gz").write_bytes(gzip.compress(raw, compresslevel=9))
    for name in ("a.gz", "b.gz"):
        np.testing.assert_array_equal(data.read_idx(tmp_path / name, sha), array)


def test_checksum_mismatch(tmp_path):
    path = tmp_path / "a"
    path.write_bytes(idx_bytes(np.zeros((2, 2), np.uint8)))
    with pytest.raises(DigitnetError, match="SHA-256 .* expected 00"):
        data.read_idx(path, "00" * 32)


@pytest.mark.parametrize("blob, message", [
    (b"", "truncated"),
    (b"\x00\x00", "truncated"),
    (b"\x08\x03\x00\x00" + b"\x00" * 12, "not an IDX file"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "unknown IDX data type"),
    (b"\x00\x00\x08\x00", "0 dimensions"),
    (b"\x00\x00\x08\x02\x00\x00\x00\x02", "truncated"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x04\x01\x02", "truncated"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x01\x01\x02", "trailing bytes"),
    (b"\x00\x00\x0e\x03\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", "refusing"),
])
def test_malformed_headers(tmp_path, blob, message):
    path = tmp_path / "bad"
    path.write_bytes(blob)
    with pytest.raises(DigitnetError, match=message):
        data.read_idx(path)


def test_corrupt_and_truncated_gzip(tmp_path):
    good = gzip.compress(idx_bytes(np.zeros((100, 28, 28), np.uint8)))
    (tmp_path / "trunc.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(DigitnetError, match="corrupt gzip|truncated"):
        data.read_idx(tmp_path / "trunc.gz")
    flipped = bytearray(good)
    flipped[20] ^= 0xFF
    (tmp_path / "flip.gz").write_bytes(bytes(flipped))
    with pytest.raises(DigitnetError):
        data.read_idx(tmp_path / "flip.gz")


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(DigitnetError, match="no such file"):
        data.read_idx(tmp_path / "nope")
    with pytest.raises(DigitnetError, match="is a folder"):
        data.read_idx(tmp_path)


def test_count_mismatch_between_images_and_labels():
    with pytest.raises(DigitnetError, match="3 images but 2 labels"):
        data.check_pair(np.zeros((3, 28, 28), np.uint8), np.zeros(2, np.uint8), "x")
    with pytest.raises(DigitnetError, match="must be uint8 of shape \\(N, 28, 28\\)"):
        data.check_pair(np.zeros((3, 27, 28), np.uint8), np.zeros(3, np.uint8), "x")
    with pytest.raises(DigitnetError, match="label 12 out of range"):
        data.check_pair(np.zeros((1, 28, 28), np.uint8), np.array([12], np.uint8), "x")


def write_fake_dataset(folder, n_train=6, n_test=4, corrupt=None):
    """Four IDX files under the MNIST names; returns the checksums to patch into a spec."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8)}
    sums = {}
    for name, array in arrays.items():
        raw = idx_bytes(array)
        sums[name] = hashlib.sha256(raw).hexdigest()
        (folder / f"{name}.gz").write_bytes(gzip.compress(raw if name != corrupt else raw[:-1] + b"\x07"))
    return arrays, sums


@pytest.fixture
def fake_spec(monkeypatch, tmp_path):
    """Register a dataset 'fake' whose files live under tmp_path/src."""
    arrays, sums = write_fake_dataset(tmp_path / "src")
    spec = data.DatasetSpec(name="fake", files={
        "train_images": ("train-images-idx3-ubyte", sums["train-images-idx3-ubyte"]),
        "train_labels": ("train-labels-idx1-ubyte", sums["train-labels-idx1-ubyte"]),
        "test_images": ("t10k-images-idx3-ubyte", sums["t10k-images-idx3-ubyte"]),
        "test_labels": ("t10k-labels-idx1-ubyte", sums["t10k-labels-idx1-ubyte"])}, mirrors=())
    monkeypatch.setitem(data.DATASETS, "fake", spec)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("DIGITNET_DATA_DIR", raising=False)
    return spec, arrays, tmp_path


def test_lookup_order(fake_spec, monkeypatch):
    spec, arrays, tmp = fake_spec
    with pytest.raises(DigitnetError, match="not found; looked in.*digitnet data download fake"):
        data.locate("fake")
    write_fake_dataset(tmp / "cache" / "digitnet" / "fake")
    assert data.locate("fake") == tmp / "cache" / "digitnet" / "fake"
    monkeypatch.setenv("DIGITNET_DATA_DIR", str(tmp / "env"))
    write_fake_dataset(tmp / "env" / "fake")
    assert data.locate("fake") == tmp / "env" / "fake"
    assert data.locate("fake", tmp / "src") == tmp / "src"  # an explicit folder wins
    x, y = data.load_split("fake", "train", tmp / "src")
    np.testing.assert_array_equal(x, arrays["train-images-idx3-ubyte"])
    assert y.dtype == np.int64


def test_explicit_folder_does_not_fall_through(fake_spec):
    with pytest.raises(DigitnetError, match="--data-dir"):
        data.locate("fake", fake_spec[2] / "empty")


def test_corrupt_dataset_file_is_refused(fake_spec):
    spec, arrays, tmp = fake_spec
    write_fake_dataset(tmp / "bad", corrupt="t10k-labels-idx1-ubyte")
    with pytest.raises(DigitnetError, match="t10k-labels-idx1-ubyte.gz: SHA-256"):
        data.load_split("fake", "test", tmp / "bad")


def test_unknown_dataset_and_split():
    with pytest.raises(DigitnetError, match="did you mean mnist"):
        data.locate("mnsit")
    with pytest.raises(DigitnetError, match="split must be"):
        data.load_split("mnist", "validation")


def test_shipped_mnist_is_the_official_one():
    rows = data.verify("mnist")
    assert [tuple(r["shape"]) for r in rows] == [(60000, 28, 28), (60000,), (10000, 28, 28), (10000,)]
    _, y = data.load_split("mnist", "train")
    assert list(y[:10]) == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert list(np.bincount(y)) == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


# ---------------------------------------------------------------------------------------------
# Property-based: whatever the bytes, the reader returns a valid array or raises DigitnetError.

def check_arbitrary(blob: bytes) -> None:
    try:
        array = data.parse_idx(io.BytesIO(blob))
    except DigitnetError:
        return
    assert isinstance(array, np.ndarray)
    header = 4 + 4 * blob[3]
    assert array.nbytes == len(blob) - header


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes(blob):
    check_arbitrary(blob)


@st.composite
def mutated_idx(draw):
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=ndim, max_size=ndim)))
    code = draw(st.sampled_from(sorted(data.IDX_DTYPES)))
    itemsize = np.dtype(data.IDX_DTYPES[code]).itemsize
    blob = bytearray(bytes([0, 0, code, ndim]) + struct.pack(f">{ndim}I", *shape)
                     + draw(st.binary(min_size=int(np.prod(shape)) * itemsize,
                                      max_size=int(np.prod(shape)) * itemsize)))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["flip", "cut", "append", "insert"]))
        pos = draw(st.integers(0, max(0, len(blob) - 1)))
        if op == "flip" and blob:
            blob[pos] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del blob[pos:]
        elif op == "append":
            blob += draw(st.binary(min_size=1, max_size=8))
        else:
            blob[pos:pos] = draw(st.binary(min_size=1, max_size=4))
    return bytes(blob)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_idx())
def test_mutated_idx(blob):
    check_arbitrary(blob)


@settings(max_examples=100, deadline=None)
@given(mutated_idx(), st.booleans(), st.integers(0, 400), st.integers(0, 255))
def test_mutated_files_gz_or_raw(tmp_path_factory, blob, gz, pos, xor):
    payload = bytearray(gzip.compress(blob) if gz else blob)
    if payload and xor:  # corrupt the compressed stream (or the raw file) itself
        payload[pos % len(payload)] ^= xor
    path = tmp_path_factory.mktemp("h") / "f"
    path.write_bytes(bytes(payload))
    try:
        data.read_idx(path)
    except DigitnetError:
        pass

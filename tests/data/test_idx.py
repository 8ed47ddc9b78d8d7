import gzip
import struct

import numpy as np
import pytest

from cohort.data.datasets import FASHION_MNIST_DEBIAN, FASHION_MNIST_FILES
from cohort.data.idx import IdxError, read_idx


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """An IDX file's bytes written by hand from the format's definition: two zero bytes, the
    type code, the number of dimensions, each dimension as a big-endian uint32, the values."""
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path, array: np.ndarray, type_code: int = 0x08, gzipped: bool = True):
    data = idx_bytes(array, type_code)
    path.write_bytes(gzip.compress(data) if gzipped else data)
    return path


@pytest.mark.parametrize("gzipped", [True, False])
def test_read_idx_returns_the_array_written(tmp_path, gzipped):
    images = np.random.default_rng(0).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    path = write_idx(tmp_path / ("images.gz" if gzipped else "images"), images, gzipped=gzipped)
    assert np.array_equal(read_idx(path, 3), images)
    wide = np.arange(6, dtype=np.int32).reshape(2, 3) - 3  # a big-endian multi-byte type
    assert np.array_equal(read_idx(write_idx(tmp_path / "wide.gz", wide, 0x0C), 2), wide)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda raw: raw[:-7], r"holds 3913 bytes of values but its header announces \(5, 28, 28\).*truncated"),
        (lambda raw: raw + b"\0", r"3921 bytes of values .* longer than its header"),
        (lambda raw: raw[:6], r"truncated inside its header"),
        (lambda raw: b"\x1f\x8b" + raw[2:], r"is not an IDX file \(its first bytes are 1f8b0803\)"),
        (lambda raw: raw[:3] + b"\x01" + raw[4:], r"holds an IDX array of 1 dimensions where 3 are expected"),
    ],
)
def test_a_damaged_idx_file_is_a_one_line_error_naming_it(tmp_path, damage, message):
    raw = idx_bytes(np.zeros((5, 28, 28), dtype=np.uint8))
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(damage(raw)))
    with pytest.raises(IdxError, match=message) as error:
        read_idx(path, 3)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_a_cut_gzip_stream_or_a_missing_file_is_a_one_line_error(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.arange(100, dtype=np.uint8)))[:-12])
    with pytest.raises(IdxError, match=r"t10k-labels-idx1-ubyte.gz is not a whole gzip file"):
        read_idx(path, 1)
    with pytest.raises(IdxError, match=r"nothing.gz is missing"):
        read_idx(tmp_path / "nothing.gz", 1)


@pytest.mark.skipif(
    not FASHION_MNIST_DEBIAN.is_dir(),
    reason=f"{FASHION_MNIST_DEBIAN} is absent: Debian's dataset-fashion-mnist is not installed (setup.sh installs it)",
)
def test_debians_fashion_mnist_files_read_as_zalando_describes_them():
    """Zalando's README: 60,000 training and 10,000 test 28×28 images, 10 classes, balanced
    (6,000 and 1,000 of each)."""
    arrays = {
        part: read_idx(FASHION_MNIST_DEBIAN / name, 1 if "labels" in part else 3)
        for part, name in FASHION_MNIST_FILES.items()
    }
    assert arrays["train_images"].shape == (60_000, 28, 28) and arrays["test_images"].shape == (10_000, 28, 28)
    assert np.array_equal(np.bincount(arrays["train_labels"]), [6_000] * 10)
    assert np.array_equal(np.bincount(arrays["test_labels"]), [1_000] * 10)
    assert arrays["train_images"].dtype == np.uint8 and arrays["train_images"].max() == 255

import gzip

import numpy as np
import pytest

from kangae.data import read_idx, write_idx
from kangae.errors import DataError


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_round_trip(tmp_path, dtype, name):
    arr = (np.arange(2 * 3 * 4) - 7).astype(dtype).reshape(2, 3, 4)
    if dtype == np.uint8:
        arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / name, arr)
    back = read_idx(tmp_path / name)
    assert back.dtype == np.dtype(dtype) and back.shape == (2, 3, 4)
    np.testing.assert_array_equal(back, arr)


def test_reads_the_standard_header_by_hand(tmp_path):
    raw = bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9])
    (tmp_path / "labels").write_bytes(raw)
    np.testing.assert_array_equal(read_idx(tmp_path / "labels"), [7, 8, 9])


def test_bad_magic_names_file(tmp_path):
    path = tmp_path / "notidx.gz"
    path.write_bytes(gzip.compress(b"PK\x03\x04 this is a zip, not IDX"))
    with pytest.raises(DataError, match=r"notidx\.gz: bad magic number"):
        read_idx(path)


def test_truncated_data(tmp_path):
    path = tmp_path / "images.idx"
    write_idx(path, np.zeros((10, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"images\.idx: truncated: header says shape \(10, 28, 28\)"):
        read_idx(path)


def test_truncated_gzip_stream(tmp_path):
    path = tmp_path / "images.gz"
    write_idx(path, np.random.default_rng(0).integers(0, 255, (50, 28, 28)).astype(np.uint8))
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match=r"images\.gz: truncated or corrupt gzip"):
        read_idx(path)


def test_trailing_garbage_and_short_header(tmp_path):
    path = tmp_path / "x.idx"
    write_idx(path, np.zeros(4, np.uint8))
    path.write_bytes(path.read_bytes() + b"junk")
    with pytest.raises(DataError, match="unexpected bytes"):
        read_idx(path)
    path.write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="too short"):
        read_idx(path)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "nope.gz")


def test_a_declared_type_other_than_the_expected_one_is_refused(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    write_idx(path, np.zeros((2, 28, 28), np.int8))  # header type 0x09
    with pytest.raises(DataError) as e:
        read_idx(path, dtype=np.uint8)
    msg = str(e.value)
    assert msg.startswith(str(path)) and "int8 (IDX type 0x09)" in msg and "uint8 (IDX type 0x08)" in msg
    assert read_idx(path, dtype="int8").dtype == np.int8  # declared and expected agree
    write_idx(tmp_path / "wide.idx", np.zeros(3, np.int32))
    assert read_idx(tmp_path / "wide.idx", dtype=">i4").dtype == np.int32  # byte order is the format's

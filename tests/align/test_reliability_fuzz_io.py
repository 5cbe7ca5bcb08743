"""Fuzz pass over :func:`align._io.load_features`: truncated or byte-flipped ``.npy`` / ``.npz`` / ``.safetensors``
files either fail with a one-line ``ValueError`` or, when the damage lies in the array's data bytes (which ``.npy``
and ``.safetensors`` carry no checksum for), come back with the original shape and dtype and only the damaged bytes
changed: never another exception, never an array of another shape."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from align._io import load_features, save_features

FORMATS = (".npy", ".npz", ".safetensors")
ORIGINAL = np.random.default_rng(0).standard_normal((7, 3)).astype(np.float32)
FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, bytes]:
    tmp = tmp_path_factory.mktemp("fuzz")
    out = {}
    for suffix in FORMATS:
        save_features(tmp / f"x{suffix}", ORIGINAL)
        out[suffix] = (tmp / f"x{suffix}").read_bytes()
    return out


def _load(path, mmap):
    try:
        return np.array(load_features(path, mmap=mmap))
    except ValueError as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith("feature file"), message
        return None


@FUZZ
@given(suffix=st.sampled_from(FORMATS), cut=st.floats(0, 1, exclude_max=True), mmap=st.booleans())
def test_truncated_file_is_a_value_error(tmp_path, originals, suffix, cut, mmap):
    raw = originals[suffix]
    path = tmp_path / f"t{suffix}"
    path.write_bytes(raw[: int(cut * len(raw))])
    assert _load(path, mmap) is None


@FUZZ
@given(suffix=st.sampled_from(FORMATS), where=st.floats(0, 1, exclude_max=True), xor=st.integers(1, 255),
       mmap=st.booleans())
def test_flipped_byte_is_caught_or_stays_in_the_data(tmp_path, originals, suffix, where, xor, mmap):
    raw = bytearray(originals[suffix])
    pos = int(where * len(raw))
    raw[pos] ^= xor
    path = tmp_path / f"f{suffix}"
    path.write_bytes(bytes(raw))
    arr = _load(path, mmap)
    if arr is None:
        return
    assert arr.shape == ORIGINAL.shape and arr.dtype == ORIGINAL.dtype, (pos, arr.shape, arr.dtype)
    changed = np.count_nonzero(arr.view(np.uint8) != ORIGINAL.view(np.uint8))
    assert changed <= 1, (pos, changed)
    if suffix == ".npz":  # zip members carry a CRC-32: a change in the data cannot pass
        assert changed == 0


@FUZZ
@given(suffix=st.sampled_from(FORMATS), extra=st.binary(min_size=1, max_size=64), mmap=st.booleans())
def test_trailing_bytes_are_caught_or_harmless(tmp_path, originals, suffix, extra, mmap):
    path = tmp_path / f"a{suffix}"
    path.write_bytes(originals[suffix] + extra)
    arr = _load(path, mmap)
    if arr is not None:
        np.testing.assert_array_equal(arr, ORIGINAL)


@pytest.mark.parametrize("suffix, old, new", [
    (".npy", b"(7, 3)", b"(7, 2)"),  # fewer columns: numpy alone would read the first 14 floats as (7, 2)
    (".npy", b"(7, 3)", b"(6, 3)"),
    (".npy", b"(7, 3)", b"(8, 3)"),
    (".npy", b"(7, 3)", b"(9, 9)"),
    (".npy", b"'<f4'", b"'<f2'"),   # a narrower dtype fits in the same bytes
    (".safetensors", b"[7,3]", b"[7,2]"),
    (".safetensors", b"[7,3]", b"[6,3]"),
    (".safetensors", b'"F32"', b'"F16"'),
])
def test_edited_header_is_caught(tmp_path, originals, suffix, old, new):
    raw = originals[suffix]
    assert raw.count(old) == 1
    path = tmp_path / f"h{suffix}"
    path.write_bytes(raw.replace(old, new))
    for mmap in (True, False):
        assert _load(path, mmap) is None

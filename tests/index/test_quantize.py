"""Storage encodings: exact float32, bounded float16 error, sign bits as unit ±1/sqrt(d) rows."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from anchorprune.index import quantize as qz

rows = st.integers(1, 6).flatmap(lambda n: st.sampled_from([8, 16, 24]).flatmap(
    lambda d: arrays(np.float32, (n, d), elements=st.floats(-4, 4, width=32))))


@settings(max_examples=50, deadline=None)
@given(rows)
def test_float32_round_trip_is_exact(v):
    assert np.array_equal(qz.decode(qz.encode(v, "float32"), "float32", v.shape[1]), v)


@settings(max_examples=50, deadline=None)
@given(rows)
def test_float16_error_is_within_half_precision(v):
    back = qz.decode(qz.encode(v, "float16"), "float16", v.shape[1])
    assert back.dtype == np.float32
    assert np.all(np.abs(back - v) <= np.abs(v) * 2**-10 + 2**-24)


@settings(max_examples=50, deadline=None)
@given(rows)
def test_bits_keep_the_sign_and_decode_to_unit_rows(v):
    d = v.shape[1]
    stored = qz.encode(v, "bits")
    assert stored.shape == (v.shape[0], d // 8) and stored.dtype == np.uint8
    back = qz.decode(stored, "bits", d)
    assert np.array_equal(back > 0, v > 0)            # zero counts as negative
    assert np.allclose(np.linalg.norm(back, axis=1), 1.0, atol=1e-5)


def test_bytes_per_vector_and_widths():
    assert [qz.bytes_per_vector(t, 128) for t in qz.DTYPES] == [512, 256, 256, 16]
    assert qz.stored_width("bits", 128) == 16 and qz.stored_width("float16", 128) == 128


def test_bad_dtype_dimension_and_overflow_are_named():
    with pytest.raises(qz.QuantizeError, match="unknown index dtype 'int4'"):
        qz.encode(np.zeros((1, 8)), "int4")
    with pytest.raises(qz.QuantizeError, match="multiple of 8, got 12"):
        qz.encode(np.zeros((1, 12)), "bits")
    with pytest.raises(qz.QuantizeError, match="overflows float16"):
        qz.encode(np.array([[1e6] + [0.0] * 7]), "float16")
    with pytest.raises(qz.QuantizeError, match="shape"):
        qz.decode(np.zeros((2, 3), dtype=np.uint8), "bits", 32)


def test_hex_rows_match_packbits_layout():
    v = np.zeros((2, 16), dtype=np.float32)
    v[0, 0] = 1.0          # first bit of the first byte is the most significant
    v[1, 15] = 1.0
    assert qz.to_hex_rows(qz.encode(v, "bits")) == ["8000", "0001"]


def test_inverse_hamming_maxsim_takes_the_best_page_row_per_query_row():
    d = 16
    rng = np.random.default_rng(0)
    q = rng.standard_normal((3, d)).astype(np.float32)
    page = np.concatenate([q[:1], -q[1:2], rng.standard_normal((2, d)).astype(np.float32)])
    qb, pb = qz.encode(q, "bits"), qz.encode(page, "bits")
    got = qz.inv_hamming_maxsim(qb, pb, d)
    qs, ps = np.unpackbits(qb, axis=1), np.unpackbits(pb, axis=1)
    want = sum(max(1 - np.count_nonzero(qs[i] != ps[j]) / d for j in range(4)) for i in range(3))
    assert got == pytest.approx(want)
    assert qz.inv_hamming_maxsim(qb[:1], pb, d) == 1.0

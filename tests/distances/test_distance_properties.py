"""Metric axioms and bounds, checked on generated inputs (hypothesis)."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from metricssl.distances.cosine_similarity import CosineSimilarity
from metricssl.distances.dot_product_similarity import DotProductSimilarity
from metricssl.distances.lp_distance import LpDistance
from metricssl.distances.snr_distance import SNRDistance

SETTINGS = settings(max_examples=40, deadline=None)

# Bounded magnitudes; with normalisation on, rows are kept away from zero, where the
# direction (and so the distance) is undefined.
_finite = st.floats(-100, 100, allow_nan=False, allow_infinity=False, width=64)


@st.composite
def batches(draw, min_rows=1, max_rows=6, nonzero_rows=False, dim=None):
    n = draw(st.integers(min_rows, max_rows))
    d = draw(st.integers(1, 5)) if dim is None else dim
    x = torch.from_numpy(draw(arrays("float64", (n, d), elements=_finite)))
    if nonzero_rows:
        x[:, 0] += torch.where(x[:, 0] >= 0, 1.0, -1.0)
    return x


lp_params = st.tuples(st.sampled_from([1, 2, 3]), st.booleans())


@SETTINGS
@given(params=lp_params, data=st.data())
def test_lp_is_a_metric(params, data):
    p, normalize = params
    x = data.draw(batches(min_rows=3, nonzero_rows=normalize))
    d = LpDistance(p=p, normalize_embeddings=normalize)(x)
    tol = 1e-9 * (1 + d.abs().max())
    assert (d >= 0).all(), "non-negativity"
    torch.testing.assert_close(d, d.T, rtol=1e-9, atol=tol.item())
    assert d.diagonal().abs().max() <= tol, "d(x, x) = 0"
    # triangle inequality: d(i, k) <= d(i, j) + d(j, k) for every i, j, k
    via = d.unsqueeze(2) + d.unsqueeze(0)  # [i, j, k] = d(i, j) + d(j, k)
    assert (d.unsqueeze(1) <= via + tol).all()


@SETTINGS
@given(params=lp_params, data=st.data())
def test_lp_query_ref_is_the_same_matrix(params, data):
    p, normalize = params
    x = data.draw(batches(nonzero_rows=normalize))
    y = data.draw(batches(nonzero_rows=normalize, dim=x.shape[1]))
    dist = LpDistance(p=p, normalize_embeddings=normalize)
    dxy, dyx = dist(x, y), dist(y, x)
    torch.testing.assert_close(dxy, dyx.T, rtol=1e-9, atol=1e-9 * (1 + dxy.abs().max().item()))


@SETTINGS
@given(x=batches(nonzero_rows=True))
def test_cosine_bounds_and_self_similarity(x):
    s = CosineSimilarity()(x)
    assert (s <= 1 + 1e-12).all() and (s >= -1 - 1e-12).all()
    torch.testing.assert_close(s, s.T)
    torch.testing.assert_close(s.diagonal(), torch.ones(len(x), dtype=x.dtype))


@SETTINGS
@given(x=batches(nonzero_rows=True), scale=st.floats(0.01, 100))
def test_cosine_is_scale_invariant_and_matches_normalised_dot_product(x, scale):
    cos = CosineSimilarity()(x)
    torch.testing.assert_close(cos, CosineSimilarity()(x * scale))
    torch.testing.assert_close(cos, DotProductSimilarity()(x))


@SETTINGS
@given(
    x=batches(min_rows=2).filter(lambda t: t.shape[1] >= 2 and bool((t.var(dim=1) > 1e-3).all()))
)
def test_snr_non_negative_and_zero_on_itself(x):
    d = SNRDistance(normalize_embeddings=False)(x)
    assert (d >= -1e-9).all()
    assert d.diagonal().abs().max() <= 1e-9

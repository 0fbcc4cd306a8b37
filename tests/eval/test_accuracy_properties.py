"""Property tests: AccuracyCalculator against PML 2.9's on tiny inputs built to break rankings.

Embeddings come from tiny grids (small integers, or multiples of 0.25), often as copies of a
few points under different labels, so squared distances are exact in float32 and ties are real
ties in both libraries: any difference is a bug, not rounding. Inputs are 1-4 columns wide,
1-30 rows, torch tensors or numpy arrays of integer, half and full float dtypes; labels have
gaps, one class, singletons, and every dtype PML accepts. Every retrieval metric is compared
(any subset, averaged per query or per class, or per class), for k in {1, 5, any k the
references allow, None, "max_bin_count"}, with several memory budgets (one search, or many
query chunks) and with FAISS's BLAS threshold at its default or at 1 (then PML's FAISS search
and ours take FAISS's BLAS path, which tiny inputs never reach otherwise). Each family of
inputs has its own test, so a failure names what broke.

The generated space leaves out what PML gets wrong or crashes on; our side of each is tested
explicitly at the end of the file:

- an int k above the references available: PML pads the neighbour table with index -1 (the
  last reference's label) and returns wrong values; we clip k with a warning;
- k="max_bin_count" when no query label occurs among the references: PML asks FAISS for k=0
  neighbours, which raises; we return NaN with a warning;
- empty inputs and 1-D vectors (not (n, d) matrices): PML raises RuntimeError, IndexError or
  ValueError from deep inside torch or FAISS; we raise ValueError naming the argument;
- integer labels beyond +-2**24: PML casts labels to float32, which merges neighbouring ids;
- mean_reciprocal_rank as the only metric: PML leaves it out of ``requires_knn()`` and raises
  TypeError (no neighbours); we compute it;
- NaN/Inf embeddings: we raise ValueError;
- NMI/AMI: the k-means seeding differs from PML's by design, so they are not compared.
"""

import contextlib
import math
import warnings

import faiss
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, currently_in_test_context, given, note, settings
from hypothesis import strategies as st
from pytorch_metric_learning.utils import accuracy_calculator as pml_ac
from pytorch_metric_learning.utils.inference import FaissKNN

from metricssl.core import chunking
from metricssl.eval.accuracy_calculator import AccuracyCalculator
from metricssl.eval.knn import knn
from tests.eval.test_accuracy_calculator import CPU, RETRIEVAL, assert_parity

# Deterministic and reproducible: the same examples on every run, no example database.
SETTINGS = settings(
    max_examples=500,
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)

MAX_ROWS = 30

# -- inputs ------------------------------------------------------------------------------------

TORCH_FLOATS = ("float32", "float64", "float16", "bfloat16")
INTEGERS = ("int64", "int32", "int16", "int8", "uint8")
NUMPY_FLOATS = ("float32", "float64", "float16")

# Label values per dtype: gaps, negatives and (where safe, see the module docstring) the
# dtype's extremes; all exact in float32, as PML casts labels to float32.
LABEL_VALUES = {
    "int64": (0, 1, 2, 3, 7, 100, -5, 70_000, 2**24, -(2**24)),
    "int32": (0, 1, 2, 3, 7, 100, -5, 70_000, 2**24, -(2**24)),
    "int16": (0, 1, 2, 3, 7, 100, -1, -5, 32_767, -32_768),
    "int8": (0, 1, 2, 3, 7, 100, -1, -5, 127, -128),
    "uint8": (0, 1, 2, 3, 7, 100, 128, 255),
    "float32": (0.0, 1.0, 2.0, 3.0, 7.0, 100.0, -2.5, 0.5),
    "float64": (0.0, 1.0, 2.0, 3.0, 7.0, 100.0, -2.5, 0.5),
    "bool": (False, True),
}
LABEL_DTYPES = tuple(LABEL_VALUES)


def _encode(values, library: str, dtype: str):
    """``values`` (a numpy array) as a torch tensor or numpy array of ``dtype``."""
    if library == "numpy":
        return np.asarray(values).astype(dtype)
    return torch.from_numpy(np.asarray(values).astype(np.float64)).to(getattr(torch, dtype))


def _holds(values, dtype: str) -> bool:
    """Whether ``dtype`` stores every value exactly (bfloat16: checked through torch)."""
    values = np.asarray(values, dtype=np.float64)
    if dtype == "bfloat16":
        back = torch.from_numpy(values).to(torch.bfloat16).double().numpy()
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            back = values.astype(dtype).astype(np.float64)
    return bool(np.array_equal(back, values))


@st.composite
def encodings(draw, values, example_labels=None):
    """A (library, dtype) that stores ``values`` exactly: embeddings, or labels when
    ``example_labels`` (every label of the example) is given."""
    library = draw(st.sampled_from(("torch", "numpy")))
    if example_labels is None:
        candidates = (TORCH_FLOATS if library == "torch" else NUMPY_FLOATS) + INTEGERS
    else:
        candidates = list(LABEL_DTYPES)
    return library, draw(st.sampled_from([d for d in candidates if _holds(values, d)]))


@st.composite
def embedding_values(draw, n: int, dim: int):
    """(n, dim) float64 values on a tiny grid, often copies of a few points (exact ties)."""
    step = draw(st.sampled_from((1.0, 0.25, 0.5)))
    top = draw(st.integers(1, 4))  # grid 0, step, ..., top * step
    cell = st.integers(0, top)
    if draw(st.booleans()):  # copies of a few points, so many rows share a position
        n_points = draw(st.integers(1, 3))
        points = draw(st.lists(cell, min_size=n_points * dim, max_size=n_points * dim))
        which = draw(st.lists(st.integers(0, n_points - 1), min_size=n, max_size=n))
        cells = np.asarray(points).reshape(n_points, dim)[which]
    else:
        cells = np.asarray(draw(st.lists(cell, min_size=n * dim, max_size=n * dim)))
    return step * cells.astype(np.float64).reshape(n, dim)


@st.composite
def labelled_rows(draw, n: int, dim: int):
    """(n, dim) embedding values and n labels (not yet encoded): from a pool of 1-5 distinct
    values (one class, a few, singletons) of one dtype's list, or from 0..2n (many classes)."""
    x = draw(embedding_values(n, dim))
    if draw(st.integers(0, 3)) == 0:  # many classes, mostly singletons
        y = draw(st.lists(st.integers(0, 2 * n), min_size=n, max_size=n))
    else:
        values = LABEL_VALUES[draw(st.sampled_from(tuple(LABEL_VALUES)))]
        pool = draw(st.lists(st.sampled_from(values), min_size=1, max_size=5, unique=True))
        y = draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))
    return x, np.asarray(y, dtype=np.float64)


def encoded(draw, x, y, example_labels):
    """``x`` and ``y`` as arrays or tensors of drawn dtypes, each stored exactly."""
    return _encode(x, *draw(encodings(x))), _encode(y, *draw(encodings(y, example_labels)))


@st.composite
def calculator_options(draw, available: int, max_bin_count_crashes_pml: bool):
    """Constructor arguments: metrics, k (never above ``available``), averaging."""
    metrics = draw(
        st.one_of(
            st.just(RETRIEVAL),
            st.lists(st.sampled_from(RETRIEVAL), min_size=1, unique=True).map(
                lambda m: tuple(sorted(m))
            ),
        )
    )
    if metrics == ("mean_reciprocal_rank",):  # PML crashes on it alone (see the end)
        other = draw(st.sampled_from([m for m in RETRIEVAL if m != "mean_reciprocal_rank"]))
        metrics = ("mean_reciprocal_rank", other)
    ks = [None] + [k for k in (1, 5) if k <= available]
    if not max_bin_count_crashes_pml:
        ks.append("max_bin_count")
    k_choices = st.sampled_from(ks)
    if available >= 1:
        k_choices = st.one_of(k_choices, st.integers(1, available))
    averaging = draw(st.sampled_from(({}, {"avg_of_avgs": True}, {"return_per_class": True})))
    return {"include": metrics, "k": draw(k_choices), **averaging}


# Engine settings: the memory budget (default; one query per chunk; a few per chunk) and
# FAISS's BLAS threshold (default: tiny inputs never reach FAISS's BLAS path, so our engine
# never hands them to FAISS; 1: both PML's and our searches run FAISS's BLAS path).
ENGINE = st.tuples(st.sampled_from((None, 1, 4_000)), st.sampled_from((None, 1)))


@contextlib.contextmanager
def engine_settings(setting):
    budget, blas_threshold = setting
    before = chunking.get_memory_budget(), faiss.cvar.distance_compute_blas_threshold
    if budget is not None:
        chunking.set_memory_budget(budget)
    if blas_threshold is not None:
        faiss.cvar.distance_compute_blas_threshold = blas_threshold
    try:
        yield
    finally:
        chunking.set_memory_budget(before[0])
        faiss.cvar.distance_compute_blas_threshold = before[1]


# -- the comparison ----------------------------------------------------------------------------


def report(text: str) -> None:
    """Attach ``text`` to a failing example (hypothesis), or print it (plain tests)."""
    if currently_in_test_context():
        note(text)
    else:
        print(text)


def _float32(x) -> torch.Tensor:
    return (torch.from_numpy(x) if isinstance(x, np.ndarray) else x).float()


def _describe(query, labels, reference, ref_labels, riq, options) -> None:
    """Both libraries' values and full neighbour lists, for a failing example's report."""
    q, ql = _float32(query), _float32(labels)
    r, rl = (q, ql) if reference is None else (_float32(reference), _float32(ref_labels))
    riq = riq or reference is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = AccuracyCalculator(**options).get_accuracy(query, labels, reference, ref_labels, riq)
    theirs = pml_ac.AccuracyCalculator(device=CPU, **options).get_accuracy(
        query, labels, reference, ref_labels, riq
    )
    report(f"ours:   {ours}\nPML's:  {theirs}")
    available = r.shape[0] - int(riq)
    if available:
        _, pml_idx = FaissKNN()(q, available, r, riq)
        _, our_idx = knn(q, r, available, exclude_self=riq)
        report(f"PML's FaissKNN ranking: {pml_idx.tolist()}\nour ranking: {our_idx.tolist()}")
        report(f"reference labels: {rl.tolist()}\nquery labels: {ql.tolist()}")


def check_parity(query, labels, reference, ref_labels, riq, options, engine) -> None:
    report(f"options={options} (memory budget, FAISS BLAS threshold)={engine} riq={riq}")
    with engine_settings(engine):
        try:
            assert_parity(query, labels, reference, ref_labels, riq, **options)
        except AssertionError:
            try:
                _describe(query, labels, reference, ref_labels, riq, options)
            except Exception as error:  # the comparison's failure is the one to report
                report(f"(could not describe the example: {error!r})")
            raise


# -- one test per input family -----------------------------------------------------------------


@st.composite
def self_retrieval(draw):
    n, dim = draw(st.integers(1, MAX_ROWS)), draw(st.integers(1, 4))
    x, y = draw(labelled_rows(n, dim))
    emb, labels = encoded(draw, x, y, y)
    options = draw(calculator_options(n - 1, max_bin_count_crashes_pml=False))
    return emb, labels, options


@SETTINGS
@given(case=self_retrieval(), engine=ENGINE)
def test_parity_reference_none(case, engine, one_thread):
    """get_accuracy(x, labels): x against itself, each query's own row left out."""
    emb, labels, options = case
    check_parity(emb, labels, None, None, False, options, engine)


@st.composite
def query_as_reference(draw):
    n, dim = draw(st.integers(1, MAX_ROWS)), draw(st.integers(1, 4))
    x, y = draw(labelled_rows(n, dim))
    emb, labels = encoded(draw, x, y, y)
    # The same objects, or copies encoded in other dtypes.
    ref, ref_labels = (emb, labels) if draw(st.booleans()) else encoded(draw, x, y, y)
    options = draw(calculator_options(n, max_bin_count_crashes_pml=False))
    return emb, labels, ref, ref_labels, options


@SETTINGS
@given(case=query_as_reference(), engine=ENGINE)
def test_parity_query_passed_as_reference(case, engine, one_thread):
    """reference = query with ref_includes_query=False: each query finds itself at distance 0
    (the issue's reproducers), tied with its duplicates."""
    emb, labels, ref, ref_labels, options = case
    check_parity(emb, labels, ref, ref_labels, False, options, engine)


@st.composite
def reference_extending_query(draw):
    n, extra, dim = draw(st.integers(1, 20)), draw(st.integers(0, 10)), draw(st.integers(1, 4))
    x, y = draw(labelled_rows(n + extra, dim))
    emb, labels = encoded(draw, x[:n], y[:n], y)
    ref, ref_labels = encoded(draw, x, y, y)
    options = draw(calculator_options(n + extra - 1, max_bin_count_crashes_pml=False))
    return emb, labels, ref, ref_labels, options


@SETTINGS
@given(case=reference_extending_query(), engine=ENGINE)
def test_parity_reference_extends_query(case, engine, one_thread):
    """ref_includes_query=True with an explicit reference whose first rows are the queries and
    whose other rows often duplicate them under other labels."""
    emb, labels, ref, ref_labels, options = case
    check_parity(emb, labels, ref, ref_labels, True, options, engine)


@st.composite
def separate_reference(draw):
    n_q, n_r, dim = draw(st.integers(1, 20)), draw(st.integers(1, 20)), draw(st.integers(1, 4))
    x, y = draw(labelled_rows(n_q + n_r, dim))  # drawn together: shared points, shared labels
    emb, labels = encoded(draw, x[:n_q], y[:n_q], y)
    ref, ref_labels = encoded(draw, x[n_q:], y[n_q:], y)
    absent = not bool(np.isin(y[:n_q], y[n_q:]).any())
    options = draw(calculator_options(n_r, max_bin_count_crashes_pml=absent))
    return emb, labels, ref, ref_labels, options


@SETTINGS
@given(case=separate_reference(), engine=ENGINE)
def test_parity_separate_reference(case, engine, one_thread):
    """Queries against other references (ref_includes_query=False): lone query labels, labels
    only among the references, rows shared by query and reference under different labels."""
    emb, labels, ref, ref_labels, options = case
    check_parity(emb, labels, ref, ref_labels, False, options, engine)


@st.composite
def duplicated_points(draw):
    """Every row is one of at most three points, with labels from up to five classes."""
    n, dim = draw(st.integers(2, MAX_ROWS)), draw(st.integers(1, 2))
    points = draw(st.lists(st.integers(0, 2), min_size=1, max_size=3, unique=True))
    x = np.asarray(draw(st.lists(st.sampled_from(points), min_size=n, max_size=n)), float)
    x = np.repeat(x[:, None], dim, axis=1)
    y = np.asarray(draw(st.lists(st.sampled_from((0, 1, 2, 7, 100)), min_size=n, max_size=n)))
    emb, labels = encoded(draw, x, y, y)
    ref_includes_query = draw(st.booleans())
    available = n - 1 if ref_includes_query else n
    options = draw(calculator_options(available, max_bin_count_crashes_pml=False))
    return emb, labels, ref_includes_query, options


@SETTINGS
@given(case=duplicated_points(), engine=ENGINE)
def test_parity_duplicate_rows_across_classes(case, engine, one_thread):
    """Rankings decided by the index tie-break alone: which duplicate comes first, and which of
    several zero-distance rows is the query's own (reference None) or is kept (query passed
    again as reference)."""
    emb, labels, ref_includes_query, options = case
    if ref_includes_query:
        check_parity(emb, labels, None, None, False, options, engine)
    else:
        check_parity(emb, labels, emb, labels, False, options, engine)


# -- our side of PML's wrong answers and crashes -----------------------------------------------

ONE_D = np.array([[0.0], [1.0], [5.0], [6.0]])


def test_k_above_available_is_clipped_where_pml_pads():
    query, labels = torch.tensor([[0.0]]), torch.tensor([1])
    ref, ref_labels = torch.tensor([[0.0], [1.0]]), torch.tensor([0, 1])
    calc = AccuracyCalculator(include=RETRIEVAL, k=5)
    with pytest.warns(UserWarning, match="exceeds the 2 references"):
        ours = calc.get_accuracy(query, labels, ref, ref_labels)
    assert ours == AccuracyCalculator(include=RETRIEVAL).get_accuracy(
        query, labels, ref, ref_labels
    )
    assert ours["mean_average_precision"] == 0.5  # one relevant reference, at rank 2
    # PML pads ranks 3-5 with index -1, whose label (the last reference's) matches: MAP > 1.
    pml = pml_ac.AccuracyCalculator(include=RETRIEVAL, k=5, device=CPU)
    assert pml.get_accuracy(query, labels, ref, ref_labels)["mean_average_precision"] > 1


def test_max_bin_count_without_matching_references_is_nan():
    calc = AccuracyCalculator(include=RETRIEVAL, k="max_bin_count")
    with pytest.warns(UserWarning, match="None of the query labels"):
        out = calc.get_accuracy(ONE_D, np.zeros(4), ONE_D[:2], np.array([5, 6]))
    assert all(math.isnan(v) for v in out.values())
    pml = pml_ac.AccuracyCalculator(include=RETRIEVAL, k="max_bin_count", device=CPU)
    with pytest.raises(RuntimeError):  # FAISS asked for k = 0 neighbours
        pml.get_accuracy(ONE_D, np.zeros(4), ONE_D[:2], np.array([5, 6]))


def test_mean_reciprocal_rank_alone():
    emb, labels = ONE_D, np.array([0, 1, 1, 0])
    alone = AccuracyCalculator(include=("mean_reciprocal_rank",)).get_accuracy(emb, labels)
    both = AccuracyCalculator(include=("mean_reciprocal_rank", "precision_at_1"))
    assert alone == {"mean_reciprocal_rank": both.get_accuracy(emb, labels)["mean_reciprocal_rank"]}
    # PML leaves it out of requires_knn(), so alone it gets no neighbours.
    pml = pml_ac.AccuracyCalculator(include=("mean_reciprocal_rank",), device=CPU)
    with pytest.raises(TypeError, match="knn_labels"):
        pml.get_accuracy(emb, labels)


@pytest.mark.parametrize(
    "args, match",
    [
        ((ONE_D[:0], np.zeros(0)), "query is empty"),
        ((ONE_D, np.zeros(4), ONE_D[:0], np.zeros(0)), "reference is empty"),
        ((ONE_D[:, 0], np.zeros(4)), "query must be 2D"),
        ((ONE_D, np.zeros(4), ONE_D[:, 0], np.zeros(4)), "reference must be 2D"),
    ],
    ids=["empty-query", "empty-reference", "1d-query", "1d-reference"],
)
def test_inputs_pml_crashes_on_raise_value_error(args, match):
    with pytest.raises(ValueError, match=match):
        AccuracyCalculator(include=RETRIEVAL).get_accuracy(*args)
    with pytest.raises((RuntimeError, IndexError, ValueError)):  # ValueError from FAISS
        pml_ac.AccuracyCalculator(include=RETRIEVAL, device=CPU).get_accuracy(*args)


def test_labels_beyond_float32_integers_stay_distinct():
    # 2**24 and 2**24 + 1 are one float32: PML merges the two classes.
    labels = torch.tensor([2**24, 2**24 + 1, 2**24, 2**24 + 1])
    emb = torch.tensor([[0.0], [1.0], [3.0], [4.0]])
    out = AccuracyCalculator(include=("precision_at_1",)).get_accuracy(emb, labels)
    assert out == {"precision_at_1": 0.0}
    pml = pml_ac.AccuracyCalculator(include=("precision_at_1",), device=CPU)
    assert pml.get_accuracy(emb, labels) == {"precision_at_1": 1.0}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_embeddings_raise(bad):
    calc = AccuracyCalculator(include=RETRIEVAL)
    x = ONE_D.copy()
    x[2, 0] = bad
    with pytest.raises(ValueError, match="query contains NaN or Inf"):
        calc.get_accuracy(x, np.zeros(4))
    with pytest.raises(ValueError, match="reference contains NaN or Inf"):
        calc.get_accuracy(ONE_D, np.zeros(4), x, np.zeros(4))


def test_clustering_metrics_on_tiny_separated_classes():
    # Not compared with PML (k-means seeding differs by design); two far-apart pairs are
    # recovered exactly.
    emb = np.array([[0.0], [0.25], [100.0], [100.25]], dtype=np.float32)
    out = AccuracyCalculator(include=("NMI", "AMI")).get_accuracy(emb, np.array([3, 3, 7, 7]))
    assert out == pytest.approx({"AMI": 1.0, "NMI": 1.0})


# -- found by these properties ---------------------------------------------------------------


@pytest.mark.parametrize("library", ["torch", "numpy"])
@pytest.mark.parametrize("labels", [[-1, 0, 127, -1], [-1, 0, 32_767, -1]], ids=["int8", "int16"])
def test_int8_int16_labels_wider_than_dtype_range(labels, library):
    # Label codes were once computed as labels - min in int8/int16, which wrapped: 0 and 127
    # (int8, with -1 present) got one class code.
    dtype = "int8" if max(labels) == 127 else "int16"
    emb = _encode(ONE_D, library, "float32")
    y = _encode(np.asarray(labels), library, dtype)
    check_parity(emb, y, None, None, False, {"include": RETRIEVAL}, (None, None))

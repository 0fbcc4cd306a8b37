"""BaseMiner: the call a user's own miner inherits, checked against the same subclass of PML's."""

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning.utils import loss_and_miner_utils as pml_lmu

from metricssl.distances.cosine_similarity import CosineSimilarity
from metricssl.distances.lp_distance import LpDistance
from metricssl.miners.base_miner import BaseMiner
from metricssl.utils import loss_and_miner_utils as lmu
from tests.parity import pooling_distance, random_embeddings, random_labels


class _TripletBody:
    """Every triplet whose negative is within ``margin`` of the positive."""

    lmu_module = None

    def __init__(self, margin=0.3, **kwargs):
        super().__init__(**kwargs)
        self.margin = margin

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        self.saw = (torch.is_grad_enabled(), ref_emb is embeddings, ref_labels is labels)
        mat = self.distance(embeddings, ref_emb)
        a, p, n = self.lmu_module.get_all_triplets_indices(labels, ref_labels)
        keep = self.distance.margin(mat[a, p], mat[a, n]) > -self.margin
        return a[keep], p[keep], n[keep]


class _PairBody:
    """Positive pairs farther than 0.5 and negative pairs closer than 1.0."""

    lmu_module = None

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        mat = self.distance(embeddings, ref_emb)
        a1, p, a2, n = self.lmu_module.get_all_pairs_indices(labels, ref_labels)
        pk = self.distance.margin(mat[a1, p], 0.5) > 0
        nk = self.distance.margin(1.0, mat[a2, n]) > 0
        return a1[pk], p[pk], a2[nk], n[nk]


class OurTriplets(_TripletBody, BaseMiner):
    lmu_module = lmu


class PmlTriplets(_TripletBody, pml_miners.BaseMiner):
    lmu_module = pml_lmu


class OurPairs(_PairBody, BaseMiner):
    lmu_module = lmu


class PmlPairs(_PairBody, pml_miners.BaseMiner):
    lmu_module = pml_lmu


def assert_same(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)


@pytest.mark.parametrize("n, classes", [(1, 1), (8, 1), (8, 8), (16, 4)])
@pytest.mark.parametrize("with_ref", [False, True])
@pytest.mark.parametrize("cosine", [False, True])
def test_subclasses_match_pml(n, classes, with_ref, cosine):
    emb = random_embeddings(n, 5, seed=n)
    labels = random_labels(n, classes, seed=n)
    ref, ref_labels = (
        (random_embeddings(7, 5, seed=1), random_labels(7, classes, seed=2))
        if with_ref
        else (None, None)
    )
    for ours_cls, pml_cls in [(OurTriplets, PmlTriplets), (OurPairs, PmlPairs)]:
        ours = ours_cls(distance=CosineSimilarity() if cosine else None, collect_stats=True)
        theirs = pml_cls(
            distance=pml_distances.CosineSimilarity() if cosine else None, collect_stats=True
        )
        out1, out2 = ours(emb, labels, ref, ref_labels), theirs(emb, labels, ref, ref_labels)
        assert_same(out1, out2)
        for name in ["num_triplets", "num_pos_pairs", "num_neg_pairs"]:
            assert getattr(ours, name) == getattr(theirs, name), name


def test_counts_and_reset_between_calls():
    miner = OurPairs(collect_stats=True)
    labels = torch.tensor([0, 0, 1, 1])
    a1, p, a2, n = miner(random_embeddings(4, 3), labels)
    assert (miner.num_pos_pairs, miner.num_neg_pairs) == (len(a1), len(a2))
    triplets = OurTriplets(collect_stats=True)
    a, _, _ = triplets(random_embeddings(4, 3), labels)
    assert triplets.num_triplets == len(a)
    assert triplets.num_pos_pairs == 0  # a stat, reset on every call


def test_mines_without_grad_and_with_the_query_as_reference():
    miner = OurTriplets()
    emb = random_embeddings(6, 3, requires_grad=True)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    out = miner(emb, labels)
    assert miner.saw == (False, True, True)
    assert not any(t.requires_grad for t in out)
    assert all(t.dtype == torch.long for t in out)
    miner(emb, labels, emb.detach().clone(), labels.clone())
    assert miner.saw == (False, False, False)


def test_default_distance_and_errors_in_the_constructor():
    assert isinstance(OurTriplets().distance, LpDistance)
    with pytest.raises(TypeError, match="distance"):
        OurTriplets(distance="cosine")


EMB, LABELS = random_embeddings(6, 4), torch.tensor([0, 0, 1, 1, 2, 2])


@pytest.mark.parametrize(
    "call, exc, pattern",
    [
        (lambda m: m(EMB, None), ValueError, "needs labels"),
        (lambda m: m(EMB[:, 0], LABELS), ValueError, "query_emb must be a 2D"),
        (lambda m: m(EMB, LABELS[:4]), ValueError, "labels has length 4 but embeddings has 6"),
        (lambda m: m(EMB, LABELS.cfloat()), TypeError, "labels must hold integer or real"),
        (lambda m: m(EMB, LABELS, ref_labels=LABELS), ValueError, "ref_labels.*without ref_emb"),
        (lambda m: m(EMB, LABELS, torch.randn(3, 4)), ValueError, "ref_labels is required"),
        (lambda m: m(EMB, LABELS, torch.randn(3, 2), LABELS[:3]), ValueError, "ref_emb has 2"),
        (
            lambda m: m(EMB, LABELS, torch.randn(3, 4), LABELS),
            ValueError,
            "ref_labels has length 6",
        ),
    ],
)
def test_bad_inputs_name_the_argument(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call(OurTriplets())


def test_bad_mine_output_is_reported():
    class NotATuple(BaseMiner):
        def mine(self, *args):
            return torch.tensor([0, 1])

    class Ragged(BaseMiner):
        def mine(self, *args):
            return torch.tensor([0, 1]), torch.tensor([1]), torch.tensor([2, 3])

    class RaggedPairs(BaseMiner):
        def mine(self, *args):
            return torch.tensor([0]), torch.tensor([1]), torch.tensor([2]), torch.tensor([3, 4])

    with pytest.raises(TypeError, match="NotATuple.mine must return a tuple"):
        NotATuple()(EMB, LABELS)
    with pytest.raises(ValueError, match="differ in length"):
        Ragged()(EMB, LABELS)
    with pytest.raises(ValueError, match="differ in length"):
        RaggedPairs()(EMB, LABELS)
    with pytest.raises(NotImplementedError):
        BaseMiner()(EMB, LABELS)


# -- what PML accepts: float labels, an empty batch, a distance's own shape rule ---------------

# Deterministic miners, built the same way in both libraries (DistanceWeightedMiner samples).
_MINERS = {
    "AngularMiner": {},
    "BatchEasyHardMiner": {},
    "BatchHardMiner": {},
    "HDCMiner": {},
    "MultiSimilarityMiner": {},
    "PairMarginMiner": {},
    "TripletMarginMiner": {},
    "UniformHistogramMiner": {},
}
# PML crashes on an empty batch inside torch (a max over nothing) for these; ours mine
# nothing (a documented deviation).
_PML_CRASHES_WHEN_EMPTY = {"BatchEasyHardMiner", "BatchHardMiner", "DistanceWeightedMiner"}


def _miner_pair(name):
    from metricssl import miners

    return getattr(miners, name)(**_MINERS[name]), getattr(pml_miners, name)(**_MINERS[name])


@pytest.mark.parametrize("name", sorted(_MINERS))
def test_float_labels_are_compared_by_value_as_in_pml(name):
    from tests.miners.miner_cases import same_tuples

    x = random_embeddings(16, 4, dtype=torch.float64, seed=2)
    labels = random_labels(16, 3, seed=2).float()
    ours, theirs = _miner_pair(name)
    torch.manual_seed(0)
    mined = ours(x, labels)
    torch.manual_seed(0)
    same_tuples(mined, theirs(x, labels))


@pytest.mark.parametrize("name", sorted(set(_MINERS) | _PML_CRASHES_WHEN_EMPTY))
def test_an_empty_batch_gives_pmls_empty_tuple(name):
    from metricssl import miners

    x, labels = torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)
    mined = getattr(miners, name)()(x, labels)
    if name in _PML_CRASHES_WHEN_EMPTY:
        with pytest.raises((RuntimeError, IndexError)):
            getattr(pml_miners, name)()(x, labels)
        expected_len = 4 if name == "BatchEasyHardMiner" else 3
    else:
        expected_len = len(getattr(pml_miners, name)()(x, labels))
    assert len(mined) == expected_len
    assert all(t.numel() == 0 and t.dtype == torch.long for t in mined)


def test_a_distance_that_takes_other_shapes_is_respected():
    """The miner leaves the shape to its distance's check_shapes, as PML does."""
    from metricssl.miners import PairMarginMiner
    from tests.miners.miner_cases import same_tuples

    x = random_embeddings(30, 4).view(10, 3, 4)
    labels = random_labels(10, 3)
    mined = PairMarginMiner(distance=pooling_distance(LpDistance))(x, labels)
    expected = pml_miners.PairMarginMiner(distance=pooling_distance(pml_distances.LpDistance))(
        x, labels
    )
    same_tuples(mined, expected)

"""BaseMetricLossFunction and GenericPairLoss: input checks, NaN policy, and the hooks a user's
own subclass relies on (checked against the same subclass of PML's base classes)."""

import warnings

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import reducers as pml_reducers
from pytorch_metric_learning import regularizers as pml_regularizers

from metricssl import losses, miners, reducers
from metricssl.distances.cosine_similarity import CosineSimilarity
from metricssl.distances.lp_distance import LpDistance
from metricssl.losses.base_metric_loss_function import BaseMetricLossFunction
from metricssl.losses.generic_pair_loss import GenericPairLoss
from metricssl.reducers.fused import FusedReduction
from metricssl.regularizers.lp_regularizer import LpRegularizer
from metricssl.utils import common_functions as c_f
from tests.host_reads import count_host_reads
from tests.parity import loss_parity, pooling_distance, random_embeddings, random_labels

# -- user-style subclasses, written once and mixed into both frameworks' base classes --------


class _NormBody:
    """Element loss: each embedding's norm (no labels needed)."""

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        return {
            "loss": {
                "losses": embeddings.norm(dim=1),
                "indices": c_f.torch_arange_from_size(embeddings),
                "reduction_type": "element",
            }
        }


class _MatBody:
    """A contrastive-style loss on the full matrix, averaged per anchor."""

    def __init__(self, **kwargs):
        super().__init__(mat_based_loss=True, **kwargs)

    def _compute_loss(self, mat, pos_mask, neg_mask):
        pos = torch.relu(self.distance.margin(mat, 0.1)) * pos_mask
        neg = torch.relu(self.distance.margin(0.9, mat)) * neg_mask
        count = (pos_mask + neg_mask).sum(dim=1).clamp(min=1)
        return {
            "loss": {
                "losses": (pos + neg).sum(dim=1) / count,
                "indices": c_f.torch_arange_from_size(mat),
                "reduction_type": "element",
            }
        }


class _PairBody:
    """Two sub-losses on the pair values, reduced by AvgNonZero by default."""

    def __init__(self, **kwargs):
        super().__init__(mat_based_loss=False, **kwargs)

    def _compute_loss(self, pos_pair, neg_pair, indices_tuple):
        a1, p, a2, n = indices_tuple
        out = {"pos_loss": self.zero_loss(), "neg_loss": self.zero_loss()}
        if len(a1) > 0:
            losses = torch.relu(self.distance.margin(pos_pair, 0.1))
            out["pos_loss"] = {"losses": losses, "indices": (a1, p), "reduction_type": "pos_pair"}
        if len(a2) > 0:
            losses = torch.relu(self.distance.margin(0.9, neg_pair))
            out["neg_loss"] = {"losses": losses, "indices": (a2, n), "reduction_type": "neg_pair"}
        return out

    def _sub_loss_names(self):
        return ["pos_loss", "neg_loss"]

    def get_default_reducer(self):
        return self.reducers_module.AvgNonZeroReducer()


class OurNorm(_NormBody, BaseMetricLossFunction):
    pass


class PmlNorm(_NormBody, pml_losses.BaseMetricLossFunction):
    pass


class OurMat(_MatBody, GenericPairLoss):
    pass


class PmlMat(_MatBody, pml_losses.GenericPairLoss):
    pass


class OurPair(_PairBody, GenericPairLoss):
    reducers_module = reducers


class PmlPair(_PairBody, pml_losses.GenericPairLoss):
    reducers_module = pml_reducers


PAIR_LOSSES = {"mat": (OurMat, PmlMat), "pair": (OurPair, PmlPair)}
LAYOUTS = {
    "many_classes": lambda n: random_labels(n, max(2, n // 4), seed=n),
    "one_class": lambda n: torch.zeros(n, dtype=torch.long),
    "singletons": lambda n: torch.arange(n),
}


def both(kind, **kwargs):
    ours_cls, pml_cls = PAIR_LOSSES[kind]
    return ours_cls(**kwargs), pml_cls(**kwargs)


# -- parity of the hooks -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", PAIR_LOSSES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("n, d", [(2, 3), (9, 4), (24, 8)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_pair_subclass_matches_pml_from_labels(kind, layout, n, d, dtype):
    ours, theirs = both(kind)
    emb = random_embeddings(n, d, dtype, seed=n)
    loss_parity(ours, theirs, emb, LAYOUTS[layout](n))


@pytest.mark.parametrize("kind", PAIR_LOSSES)
@pytest.mark.parametrize(
    "miner",
    [
        lambda: pml_miners.MultiSimilarityMiner(epsilon=0.5),
        lambda: pml_miners.TripletMarginMiner(margin=0.3),
        lambda: pml_miners.PairMarginMiner(pos_margin=0.9, neg_margin=0.1),
    ],
)
def test_pair_subclass_matches_pml_with_a_miner(kind, miner):
    emb = random_embeddings(20, 6, torch.float64, seed=3)
    labels = LAYOUTS["many_classes"](20)
    indices = miner()(emb, labels)
    ours, theirs = both(kind)
    loss_parity(ours, theirs, emb, labels, indices_tuple=indices)
    # without labels: the tuple alone defines the pairs
    ours, theirs = both(kind)
    loss_parity(ours, theirs, emb, None, indices_tuple=indices)


@pytest.mark.parametrize("kind", PAIR_LOSSES)
@pytest.mark.parametrize("mined", [False, True])
def test_pair_subclass_matches_pml_with_ref_emb(kind, mined):
    emb = random_embeddings(10, 5, torch.float64, seed=1)
    ref = random_embeddings(14, 5, torch.float64, seed=2)
    labels, ref_labels = random_labels(10, 3, seed=1), random_labels(14, 3, seed=2)
    indices = pml_miners.MultiSimilarityMiner(0.5)(emb, labels, ref, ref_labels) if mined else None
    ours, theirs = both(kind)
    loss_parity(ours, theirs, emb, labels, indices, ref, ref_labels)


@pytest.mark.parametrize("kind", PAIR_LOSSES)
def test_pair_subclass_with_other_distance_reducer_and_regularizer(kind):
    emb = random_embeddings(16, 6, torch.float64, seed=5)
    labels = LAYOUTS["many_classes"](16)
    ours_cls, pml_cls = PAIR_LOSSES[kind]
    from pytorch_metric_learning import distances as pml_distances

    ours = ours_cls(
        distance=CosineSimilarity(),
        reducer=reducers.SumReducer(),
        embedding_regularizer=LpRegularizer(),
        embedding_reg_weight=0.3,
    )
    theirs = pml_cls(
        distance=pml_distances.CosineSimilarity(),
        reducer=pml_reducers.SumReducer(),
        embedding_regularizer=pml_regularizers.LpRegularizer(),
        embedding_reg_weight=0.3,
    )
    assert ours.sub_loss_names() == theirs.sub_loss_names()
    loss_parity(ours, theirs, emb, labels)


@pytest.mark.parametrize("kind", PAIR_LOSSES)
def test_half_precision_against_pml_in_float32(kind):
    emb = random_embeddings(16, 8, torch.bfloat16, seed=6)
    labels = LAYOUTS["many_classes"](16)
    ours, theirs = both(kind)
    v, _ = loss_parity(ours, theirs, emb, labels, reference_dtype=torch.float32)
    assert v.dtype == torch.bfloat16


def test_norm_subclass_matches_pml_with_reducers_and_regularizer():
    emb = random_embeddings(7, 3, torch.float64, seed=8)
    loss_parity(OurNorm(), PmlNorm(), emb)
    loss_parity(
        OurNorm(reducer=reducers.ThresholdReducer(low=1.5)),
        PmlNorm(reducer=pml_reducers.ThresholdReducer(low=1.5)),
        emb,
    )
    loss_parity(
        OurNorm(embedding_regularizer=LpRegularizer(power=2), embedding_reg_weight=0.5),
        PmlNorm(
            embedding_regularizer=pml_regularizers.LpRegularizer(power=2), embedding_reg_weight=0.5
        ),
        emb,
    )


@pytest.mark.parametrize("kind", PAIR_LOSSES)
def test_no_pairs_gives_a_zero_that_backpropagates(kind):
    ours, _ = both(kind)
    emb = random_embeddings(1, 4, requires_grad=True)
    out = ours(emb, torch.tensor([0]))
    assert out.item() == 0
    (g,) = torch.autograd.grad(out, emb)
    assert torch.equal(g, torch.zeros_like(emb))
    emb2 = random_embeddings(2, 4, requires_grad=True)
    out = ours(emb2, torch.tensor([0, 1]))  # one negative pair each way, as PML: zero
    assert out.item() == 0 and out.requires_grad


def test_zero_losses_and_sub_loss_names():
    loss = OurPair(embedding_regularizer=LpRegularizer())
    assert loss.sub_loss_names() == ["pos_loss", "neg_loss", "embedding_reg_loss"]
    assert isinstance(loss.reducer, reducers.MultipleReducers)
    assert set(loss.zero_losses()) == {"pos_loss", "neg_loss", "embedding_reg_loss"}
    assert all(v["reduction_type"] == "already_reduced" for v in loss.zero_losses().values())
    assert OurNorm().sub_loss_names() == ["loss"]
    assert isinstance(OurNorm().reducer, reducers.MeanReducer)
    assert isinstance(OurNorm().distance, LpDistance)


# -- fused reduction -------------------------------------------------------------------------


def test_fused_reduction_follows_the_reducer():
    assert OurNorm().fused_reduction() == FusedReduction(mean=True)
    assert OurNorm(reducer=reducers.AvgNonZeroReducer()).fused_reduction() == FusedReduction(low=0)
    assert OurNorm(reducer=reducers.DivisorReducer()).fused_reduction() is None
    assert OurNorm(reducer=reducers.ClassWeightedReducer(torch.ones(3))).fused_reduction() is None
    assert OurNorm(reducer=reducers.PerAnchorReducer()).fused_reduction() is None

    class MyMean(reducers.MeanReducer):
        pass

    assert OurNorm(reducer=MyMean()).fused_reduction() is None
    # one reducer per sub-loss: each name gets its own rule
    pair = OurPair()
    assert pair.fused_reduction("pos_loss") == FusedReduction(low=0)
    multi = reducers.MultipleReducers({"pos_loss": reducers.SumReducer()})
    pair = OurPair(reducer=multi)
    assert pair.fused_reduction("pos_loss") == FusedReduction(mean=False)
    assert pair.fused_reduction("neg_loss") == FusedReduction(mean=True)  # the default reducer

    class MyMultiple(reducers.MultipleReducers):
        def sub_loss_reduction(self, sub_losses, embeddings=None, labels=None):
            return sub_losses.max()

    assert OurPair(reducer=MyMultiple({})).fused_reduction("pos_loss") is None


# -- errors ----------------------------------------------------------------------------------

EMB = random_embeddings(6, 4)
LABELS = torch.tensor([0, 0, 1, 1, 2, 2])


@pytest.mark.parametrize(
    "call, exc, pattern",
    [
        (lambda f: f(EMB[:, 0], LABELS), ValueError, "query_emb must be a 2D"),
        (lambda f: f(EMB.tolist(), LABELS), TypeError, "embeddings must be a torch.Tensor"),
        (lambda f: f(EMB.long(), LABELS), TypeError, "embeddings must be a floating-point"),
        (lambda f: f(EMB, LABELS.view(3, 2)), ValueError, "labels must be a 1D"),
        (lambda f: f(EMB, LABELS[:5]), ValueError, "labels has length 5 but embeddings has 6"),
        (lambda f: f(EMB, LABELS.cfloat()), TypeError, "labels must hold integer or real"),
        (lambda f: f(EMB, LABELS, ref_labels=LABELS), ValueError, "ref_labels.*without ref_emb"),
        (
            lambda f: f(EMB, LABELS, ref_emb=torch.randn(3, 5), ref_labels=LABELS[:3]),
            ValueError,
            "embedding size 4 but ref_emb has 5",
        ),
        (
            lambda f: f(EMB, LABELS, ref_emb=torch.randn(3, 4), ref_labels=LABELS),
            ValueError,
            "ref_labels has length 6 but ref_emb has 3",
        ),
        (
            lambda f: f(EMB, LABELS, ref_emb=torch.randn(3, 4, 1)),
            ValueError,
            "ref_emb must be a 2D",
        ),
        (
            lambda f: f(EMB, LABELS, (torch.tensor([0]), torch.tensor([6]), torch.tensor([2]))),
            ValueError,
            r"indices_tuple\[1\].*outside \[0, 6\)",
        ),
        (
            lambda f: f(EMB, LABELS, (torch.tensor([7]), torch.tensor([1]), torch.tensor([2]))),
            ValueError,
            r"indices_tuple\[0\]",
        ),
        (
            lambda f: f(EMB, LABELS, (torch.tensor([0]), torch.tensor([1]))),
            TypeError,
            "indices_tuple must be a tuple of 3",
        ),
        (
            lambda f: f(EMB, LABELS, (torch.tensor([0.0]), torch.tensor([1]), torch.tensor([2]))),
            TypeError,
            "integer indices",
        ),
        (
            lambda f: f(
                EMB,
                LABELS,
                ref_emb=torch.randn(4, 4),
                ref_labels=LABELS[:4],
                indices_tuple=(torch.tensor([0]), torch.tensor([5]), torch.tensor([1])),
            ),
            ValueError,
            r"outside \[0, 4\)",
        ),
    ],
)
@pytest.mark.parametrize("loss_cls", [OurNorm, OurMat, OurPair])
def test_bad_inputs_name_the_argument(loss_cls, call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call(loss_cls())


def test_pair_losses_need_labels_or_indices_and_ref_labels():
    with pytest.raises(ValueError, match="labels or an indices_tuple"):
        OurMat()(EMB)
    with pytest.raises(ValueError, match="ref_labels is required"):
        OurPair()(EMB, LABELS, ref_emb=torch.randn(3, 4))
    # a miner's tuple defines the pairs, so ref_labels is not needed then
    indices = (torch.tensor([0]), torch.tensor([1]), torch.tensor([2]))
    OurPair()(EMB, LABELS, indices, ref_emb=torch.randn(3, 4))


def test_a_pair_cannot_be_positive_and_negative():
    indices = (torch.tensor([0, 1]), torch.tensor([1, 2]), torch.tensor([0]), torch.tensor([1]))
    with pytest.raises(ValueError, match="both positive and negative"):
        OurMat()(EMB, LABELS, indices)


def test_bad_constructor_arguments():
    with pytest.raises(TypeError, match="reducer"):
        OurNorm(reducer="mean")
    with pytest.raises(TypeError, match="distance"):
        OurNorm(distance=torch.nn.Identity())


# -- NaN policy ------------------------------------------------------------------------------


@pytest.mark.parametrize("loss_cls", [OurNorm, OurMat, OurPair])
@pytest.mark.parametrize("where", ["embeddings", "ref_emb"])
def test_nonfinite_embeddings_give_nan_and_a_warning(loss_cls, where):
    emb, ref = random_embeddings(6, 4), random_embeddings(5, 4, seed=1)
    ref_labels = torch.tensor([0, 1, 2, 0, 1])
    (emb if where == "embeddings" else ref)[3, 1] = float("nan")
    # the NaN row is a singleton in the pair losses' view: it would not change their value
    with pytest.warns(RuntimeWarning, match=f"{loss_cls.__name__}.*NaN or Inf"):
        out = loss_cls()(emb, LABELS, ref_emb=ref, ref_labels=ref_labels)
    assert torch.isnan(out)
    emb[3, 1] = float("inf")
    with pytest.warns(RuntimeWarning):
        assert torch.isnan(loss_cls()(emb, LABELS))


def test_finite_embeddings_give_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for loss_cls in [OurNorm, OurMat, OurPair]:
            assert torch.isfinite(loss_cls()(random_embeddings(6, 4), LABELS))


# -- the range check of a miner's indices reads nothing back ------------------------------------


@pytest.mark.parametrize(
    "loss, miner",
    [
        (losses.TripletMarginLoss(), miners.TripletMarginMiner(margin=0.5)),
        (losses.ContrastiveLoss(), miners.MultiSimilarityMiner()),
        (losses.MultiSimilarityLoss(), miners.PairMarginMiner()),
    ],
)
def test_built_in_miner_output_is_not_read_back(loss, miner, monkeypatch):
    """Its indices are in range by construction: checking them would be a synchronisation
    per loss call on CUDA. The same indices built by hand are read (and checked)."""
    x, labels = random_embeddings(32, 8, torch.float32, seed=0), random_labels(32, 4, seed=0)
    mined = miner(x, labels)
    assert len(mined[0]) > 0
    copied = tuple(t.clone() for t in mined)
    with count_host_reads(monkeypatch) as reads:
        loss.check_inputs(x, labels, mined, None, None)
    assert sum(reads.values()) == 0, reads
    with count_host_reads(monkeypatch) as reads:
        loss.check_inputs(x, labels, copied, None, None)
    assert sum(reads.values()) > 0
    with count_host_reads(monkeypatch) as mined_reads:
        from_miner = loss(x, labels, mined)
    with count_host_reads(monkeypatch) as copied_reads:
        by_hand = loss(x, labels, copied)
    assert sum(mined_reads.values()) < sum(copied_reads.values())
    assert torch.equal(from_miner, by_hand)


def test_vouched_indices_are_still_checked_when_they_could_be_out_of_range():
    loss, miner = losses.TripletMarginLoss(), miners.TripletMarginMiner(margin=0.5)
    x, labels = random_embeddings(32, 8, torch.float32, seed=1), random_labels(32, 4, seed=1)
    a, p, n = miner(x, labels)
    assert int(a.max()) >= 16 and int(n.max()) >= 16
    # Fewer embeddings than the miner saw: the bound no longer holds.
    with pytest.raises(ValueError, match=r"indices_tuple\[0\]"):
        loss(x[:16], labels[:16], (a, p, n))
    with pytest.raises(ValueError, match=r"indices_tuple\[1\]"):
        loss(x, labels, (a, p, n), ref_emb=x[:16], ref_labels=labels[:16])
    # Changed in place after mining: checked again.
    n.add_(100)
    with pytest.raises(ValueError, match=r"indices_tuple\[2\]"):
        loss(x, labels, (a, p, n))


def test_a_user_miner_subclass_is_checked(monkeypatch):
    class Shifted(miners.BaseMiner):
        def mine(self, embeddings, labels, ref_emb, ref_labels):
            idx = torch.arange(len(embeddings))
            return idx, idx, idx + 1  # the last negative is past the end

    x, labels = random_embeddings(8, 4, torch.float32, seed=2), random_labels(8, 2, seed=2)
    with pytest.raises(ValueError, match=r"indices_tuple\[2\] has indices in \[1, 8\]"):
        losses.TripletMarginLoss()(x, labels, Shifted()(x, labels))


# -- what PML accepts: float labels, an empty batch, a distance's own shape rule ---------------

# Losses built the same way in both libraries; the classification ones need sizes.
_SIZED = {"num_classes": 3, "embedding_size": 4}
_LOSS_ARGS = {
    "AngularLoss": {},
    "CircleLoss": {},
    "ContrastiveLoss": {},
    "DynamicSoftMarginLoss": {},
    "FastAPLoss": {"num_bins": 10},
    "GeneralizedLiftedStructureLoss": {},
    "HistogramLoss": {"n_bins": 10},
    "InstanceLoss": {},
    "IntraPairVarianceLoss": {},
    "LiftedStructureLoss": {},
    "MarginLoss": {},
    "MultiSimilarityLoss": {},
    "NCALoss": {},
    "NPairsLoss": {},
    "NTXentLoss": {},
    "PNPLoss": {},
    "RankedListLoss": {"margin": 0.4, "Tn": 1.2},
    "SignalToNoiseRatioContrastiveLoss": {},
    "SupConLoss": {},
    "ThresholdConsistentMarginLoss": {},
    "TripletMarginLoss": {},
    "TupletMarginLoss": {},
    "ProxyNCALoss": _SIZED,
    "ProxyAnchorLoss": _SIZED,
    "ArcFaceLoss": _SIZED,
    "CosFaceLoss": _SIZED,
    "LargeMarginSoftmaxLoss": _SIZED,
    "NormalizedSoftmaxLoss": _SIZED,
    "SphereFaceLoss": _SIZED,
    "SubCenterArcFaceLoss": _SIZED,
    "SoftTripleLoss": _SIZED,
    "P2SGradLoss": {"descriptors_dim": 4, "num_classes": 3},
}
# PML indexes its weights with the labels: float labels crash there (we take whole numbers).
_INDEXES_BY_LABEL = {
    "ProxyAnchorLoss", "ArcFaceLoss", "CosFaceLoss", "LargeMarginSoftmaxLoss",
    "NormalizedSoftmaxLoss", "SphereFaceLoss", "SubCenterArcFaceLoss", "SoftTripleLoss",
    "P2SGradLoss",
}  # fmt: skip


def _pair(name):
    """The same loss from both libraries, with the same initial weights."""
    torch.manual_seed(0)
    ours = getattr(losses, name)(**_LOSS_ARGS[name])
    torch.manual_seed(0)
    theirs = getattr(pml_losses, name)(**_LOSS_ARGS[name])
    return ours, theirs


def _value_and_grad(loss_fn, x, labels):
    x = x.detach().clone().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = loss_fn(x, labels)
    value.backward()
    return value.detach(), x.grad


@pytest.mark.parametrize("name", sorted(_LOSS_ARGS))
def test_float_labels_are_compared_by_value_as_in_pml(name):
    """torch.zeros(N) or float class ids: PML compares label values; so do we."""
    x = random_embeddings(12, 4, dtype=torch.float64, seed=3)
    labels = random_labels(12, 3, seed=3).double()
    ours, theirs = _pair(name)
    value, grad = _value_and_grad(ours, x, labels)
    if name not in _INDEXES_BY_LABEL:
        expected, expected_grad = _value_and_grad(theirs, x, labels)
    else:
        # Where PML crashes, whole-number float labels are the class ids they hold.
        expected, expected_grad = _value_and_grad(_pair(name)[0], x, labels.long())
    torch.testing.assert_close(value, expected)
    torch.testing.assert_close(grad, expected_grad)


def test_float_labels_that_are_not_class_ids_are_refused_by_the_classification_losses():
    with pytest.raises(ValueError, match="whole numbers"):
        losses.ArcFaceLoss(**_SIZED)(EMB, LABELS.float() + 0.5)


@pytest.mark.parametrize("name", sorted(_LOSS_ARGS))
def test_an_empty_batch_gives_pmls_answer(name):
    """Zero embeddings: PML's value (0, or NaN for the softmax-over-classes losses, the mean of
    nothing), and backward() runs."""
    x = torch.zeros(0, 4, dtype=torch.float64)
    labels = torch.zeros(0, dtype=torch.long)
    ours, theirs = _pair(name)
    value, grad = _value_and_grad(ours, x, labels)
    expected, _ = _value_and_grad(theirs, x, labels)
    torch.testing.assert_close(value, expected.to(value.dtype), equal_nan=True)
    assert grad.shape == (0, 4)


@pytest.mark.parametrize("name", ["ContrastiveLoss", "TripletMarginLoss", "MultiSimilarityLoss"])
def test_a_distance_that_takes_other_shapes_is_respected(name):
    """The loss leaves the shape to its distance's check_shapes, as PML does."""
    from pytorch_metric_learning.distances import LpDistance as PMLLpDistance

    x = random_embeddings(30, 4, dtype=torch.float64).view(10, 3, 4)
    labels = random_labels(10, 3)
    ours = getattr(losses, name)(distance=pooling_distance(LpDistance))
    theirs = getattr(pml_losses, name)(distance=pooling_distance(PMLLpDistance))
    loss_parity(ours, theirs, x, labels)
    with pytest.raises(ValueError, match="2-D or 3-D"):
        ours(x.view(10, 3, 2, 2), labels)

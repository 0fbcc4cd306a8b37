"""The drop-in promise: PML's names for the core exist here, with PML's defaults."""

import inspect

import pytest
import pytorch_metric_learning as pml
import pytorch_metric_learning.distances
import pytorch_metric_learning.losses
import pytorch_metric_learning.miners
import pytorch_metric_learning.reducers  # noqa: F401  (PML does not import its subpackages)
import torch

import metricssl

CORE = {
    "distances": [
        "BaseDistance",
        "BatchedDistance",
        "CosineSimilarity",
        "DotProductSimilarity",
        "LpDistance",
        "SNRDistance",
    ],
    "reducers": [
        "AvgNonZeroReducer",
        "BaseReducer",
        "ClassWeightedReducer",
        "DivisorReducer",
        "DoNothingReducer",
        "MeanReducer",
        "MultipleReducers",
        "PerAnchorReducer",
        "SumReducer",
        "ThresholdReducer",
    ],
    "losses": [
        "BaseMetricLossFunction",
        "CircleLoss",
        "ContrastiveLoss",
        "CrossBatchMemory",
        "GeneralizedLiftedStructureLoss",
        "GenericPairLoss",
        "LiftedStructureLoss",
        "MarginLoss",
        "MultiSimilarityLoss",
        "MultipleLosses",
        "NPairsLoss",
        "NTXentLoss",
        "SelfSupervisedLoss",
        "SignalToNoiseRatioContrastiveLoss",
        "SupConLoss",
        "TripletMarginLoss",
        "TupletMarginLoss",
    ],
    "miners": [
        "AngularMiner",
        "BaseMiner",
        "BatchEasyHardMiner",
        "BatchHardMiner",
        "DistanceWeightedMiner",
        "HDCMiner",
        "MultiSimilarityMiner",
        "PairMarginMiner",
        "TripletMarginMiner",
        "UniformHistogramMiner",
    ],
}

PML_HELPERS = [
    "get_all_pairs_indices",
    "get_all_triplets_indices",
    "convert_to_pairs",
    "convert_to_triplets",
    "convert_to_weights",
    "get_random_triplet_indices",
    "remove_self_comparisons",
    "logsumexp",
]


@pytest.mark.parametrize("module", sorted(CORE))
def test_core_names_exist_in_both(module):
    ours, theirs = getattr(metricssl, module), getattr(pml, module)
    for name in CORE[module]:
        assert hasattr(theirs, name), f"PML has no {module}.{name}: fix this list"
        assert hasattr(ours, name), f"metricssl.{module} lacks {name}"


def test_loss_and_miner_utils_helpers():
    from pytorch_metric_learning.utils import loss_and_miner_utils as pml_lmu

    from metricssl.utils import loss_and_miner_utils as lmu

    for name in PML_HELPERS:
        assert callable(getattr(pml_lmu, name)) and callable(getattr(lmu, name)), name


CONCRETE_LOSSES = [
    "CircleLoss",
    "ContrastiveLoss",
    "GeneralizedLiftedStructureLoss",
    "LiftedStructureLoss",
    "MarginLoss",
    "MultiSimilarityLoss",
    "NPairsLoss",
    "NTXentLoss",
    "SignalToNoiseRatioContrastiveLoss",
    "SupConLoss",
    "TripletMarginLoss",
    "TupletMarginLoss",
    "AngularLoss",
    "DynamicSoftMarginLoss",
    "FastAPLoss",
    "HistogramLoss",
    "InstanceLoss",
    "IntraPairVarianceLoss",
    "NCALoss",
    "PNPLoss",
    "SmoothAPLoss",
    "ThresholdConsistentMarginLoss",
    "RankedListLoss",
    "ManifoldLoss",
    "ArcFaceLoss",
    "CosFaceLoss",
    "SphereFaceLoss",
    "LargeMarginSoftmaxLoss",
    "NormalizedSoftmaxLoss",
    "SubCenterArcFaceLoss",
    "P2SGradLoss",
    "ProxyNCALoss",
    "ProxyAnchorLoss",
    "SoftTripleLoss",
]

# Losses whose constructor has required arguments (the same in both libraries).
_SIZES = {"num_classes": 5, "embedding_size": 8}
REQUIRED_ARGS = {
    "RankedListLoss": {"margin": 0.4, "Tn": 4},
    "ManifoldLoss": {"l": 8},
    "P2SGradLoss": {"descriptors_dim": 8, "num_classes": 5},
    **{
        name: _SIZES
        for name in (
            "ArcFaceLoss",
            "CosFaceLoss",
            "SphereFaceLoss",
            "LargeMarginSoftmaxLoss",
            "NormalizedSoftmaxLoss",
            "SubCenterArcFaceLoss",
            "ProxyNCALoss",
            "ProxyAnchorLoss",
            "SoftTripleLoss",
        )
    },
}


def _both(name):
    args = REQUIRED_ARGS.get(name, {})
    return getattr(metricssl.losses, name)(**args), getattr(pml.losses, name)(**args)


def _reducer_layout(loss):
    r = loss.reducer
    if type(r).__name__ == "MultipleReducers":
        return {k: type(v).__name__ for k, v in r.reducers.items()}
    return type(r).__name__


@pytest.mark.parametrize("name", CONCRETE_LOSSES)
def test_default_distance_and_reducer_match_pml(name):
    ours, theirs = _both(name)
    assert type(ours.distance).__name__ == type(theirs.distance).__name__
    assert _reducer_layout(ours) == _reducer_layout(theirs)


@pytest.mark.parametrize("name", CONCRETE_LOSSES)
def test_default_hyperparameters_match_pml(name):
    """Every constructor argument with a default that PML stores as an attribute is equal."""
    ours, theirs = _both(name)
    params = inspect.signature(getattr(metricssl.losses, name)).parameters
    compared = 0
    for arg, p in params.items():
        if p.default is inspect.Parameter.empty or not hasattr(theirs, arg):
            continue
        a, b = getattr(ours, arg), getattr(theirs, arg)
        if isinstance(b, (int, float, bool, str)) or b is None:
            assert a == pytest.approx(b) if isinstance(b, float) else a == b, (name, arg)
            compared += 1
        elif torch.is_tensor(b):
            torch.testing.assert_close(torch.as_tensor(a).float(), b.float())
            compared += 1
    assert compared > 0 or not any(hasattr(theirs, a) for a in params)


def _pml_classes(module):
    import importlib

    pml_module = importlib.import_module(f"pytorch_metric_learning.{module}")
    return sorted(
        name
        for name, obj in vars(pml_module).items()
        if isinstance(obj, type) and not name.startswith("_") and hasattr(metricssl, module)
    )


SIGNATURE_MODULES = ("distances", "losses", "miners", "reducers", "regularizers", "samplers")


@pytest.mark.parametrize(
    "module, name",
    [(m, n) for m in SIGNATURE_MODULES for n in _pml_classes(m)],
)
def test_constructor_arguments_match_pml(module, name):
    """Every explicit argument of PML's constructor exists here, with PML's default."""
    import importlib

    theirs = getattr(importlib.import_module(f"pytorch_metric_learning.{module}"), name)
    ours = getattr(importlib.import_module(f"metricssl.{module}"), name, None)
    if ours is None:
        pytest.skip(f"metricssl.{module} has no {name} (the name-coverage test reports it)")
    ours_params = inspect.signature(ours.__init__).parameters
    for arg, p in inspect.signature(theirs.__init__).parameters.items():
        if arg == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        assert arg in ours_params, f"{name} lacks PML's argument {arg!r}"
        if callable(p.default):  # a default function: its behaviour is tested elsewhere
            assert callable(ours_params[arg].default), (name, arg)
        elif p.default is not p.empty:
            assert ours_params[arg].default == p.default, (name, arg)

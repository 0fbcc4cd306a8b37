"""benchmarks/bench_losses.py: the workloads of both libraries agree, for every kind of case."""

import numpy as np
import pytest

from benchmarks.bench_losses import CASES, make_workload


def outputs(case: str, impl: str) -> dict:
    args = {"case": case, "impl": impl, "n": 32, "dim": 16, "per_class": 4}
    workload = make_workload({**args, "seed": 0, "device": "cpu"})
    return workload.collect(workload.run())


@pytest.mark.parametrize(
    "case", ["VICRegLoss", "NTXentLoss[ssl]", "LpRegularizer", "SparseCentersRegularizer"]
)
def test_pml_and_metricssl_workloads_give_the_same_value_and_gradient(case):
    ours, pml = outputs(case, "ours"), outputs(case, "pml")
    np.testing.assert_allclose(ours["value"], pml["value"], rtol=1e-5)
    np.testing.assert_allclose(ours["grad"], pml["grad"], rtol=1e-4, atol=1e-7)
    assert np.abs(pml["grad"]).max() > 0


def test_every_regularizer_of_pml_has_a_case():
    from pytorch_metric_learning import regularizers

    names = {n for n in dir(regularizers) if n.endswith("Regularizer") and n != "BaseRegularizer"}
    assert names <= {c.cls for c in CASES.values() if c.kind == "regularizer"}

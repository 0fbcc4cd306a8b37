"""benchmarks/bench_training.py: PML's training loop and evaluation under both libraries, on a
few hundred Fashion-MNIST images, in this process."""

import numpy as np
import pytest

from benchmarks import bench_training

SMALL = {"seed": 0, "n_train": 160, "n_test": 32}


@pytest.fixture(scope="module", autouse=True)
def fashion_mnist():
    from metricssl.data import load_fashion_mnist

    try:
        load_fashion_mnist(split="test", progress=False)
    except OSError:  # FileNotFoundError included
        pytest.skip("Fashion-MNIST is not installed (Debian's dataset-fashion-mnist)")


def outputs(phase: str, impl: str, **args) -> dict:
    workload = bench_training.make_workload({**SMALL, **args, "phase": phase, "impl": impl})
    return workload.collect(workload.run())


def test_pml_and_metricssl_train_evaluate_and_score_alike(tmp_path):
    model = tmp_path / "model.pt"
    pml = outputs("train", "pml", save_model=str(model))
    ours = outputs("train", "ours")
    # 160 images: 4 passes of 4 images x 10 classes, in batches of 128 and 32.
    assert len(pml["losses"]) == len(ours["losses"]) == 2
    agree = bench_training.compare_losses(ours, pml)
    assert agree["first_max_rel_diff"] < 1e-5
    assert model.is_file()

    embedded = {
        impl: outputs("embed", impl, model_path=str(model), workers=0) for impl in ("pml", "ours")
    }
    agree = bench_training.compare_embeddings(embedded["ours"], embedded["pml"])
    assert agree["same_labels"] and agree["max_abs_diff"] < 1e-5
    assert embedded["pml"]["train_embeddings"].shape == (160, 128)

    path = tmp_path / "embeddings.npz"
    np.savez(path, **embedded["pml"])
    scores = {
        impl: outputs("accuracy", impl, embeddings_path=str(path)) for impl in ("pml", "ours")
    }
    agree = bench_training.compare_accuracy(scores["ours"], scores["pml"])
    assert set(agree["ours"]) == set(bench_training.METRICS)
    assert agree["max_abs_diff"] < 1e-4


def test_the_evaluation_row_adds_both_phases_and_needs_both():
    ok = {"status": "ok"}
    rows = {
        "embed": {"pml": {**ok, "time_s": 4.0}, "ours": {**ok, "time_s": 3.0}},
        "accuracy": {"pml": {**ok, "time_s": 6.0}, "ours": {**ok, "time_s": 2.0}},
    }
    row = bench_training.evaluation_row(rows)
    assert row["pml"]["time_s"] == 10.0 and row["ours"]["time_s"] == 5.0
    assert row["speedup"] == 2.0
    rows["accuracy"]["ours"] = {"status": "timeout"}
    row = bench_training.evaluation_row(rows)
    assert row["ours"] == {"status": "incomplete"} and "speedup" not in row


@pytest.mark.parametrize("flag", ["--n-train=0", "--repeats=-1", "--workers=-1"])
def test_bad_arguments_are_refused(flag):
    with pytest.raises(SystemExit):
        bench_training.parse_args([flag])

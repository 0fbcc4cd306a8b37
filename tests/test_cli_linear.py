"""``metricssl evaluate --linear`` (offline linear evaluation) and ``train
--linear-probe/--no-linear-probe`` (the online probe) from the command line."""

import json

import numpy as np
import pytest
import torch

from metricssl.cli import main
from metricssl.eval.linear import linear_evaluation

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def feature_files(tmp_path):
    """Linearly separable training (reference) and test (query) features with labels."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 3, generator=g)
    x = torch.randn(300, 8, generator=g) * 2 + 5
    y = ((x - 5) @ w).argmax(dim=1)
    files = {"r.npy": x[:200], "rl.npy": y[:200], "q.npy": x[200:], "ql.npy": y[200:]}
    for name, array in files.items():
        np.save(tmp_path / name, array.numpy())
    argv = ["evaluate", "--embeddings", str(tmp_path / "q.npy")]
    argv += ["--labels", str(tmp_path / "ql.npy")]
    argv += ["--reference-embeddings", str(tmp_path / "r.npy")]
    argv += ["--reference-labels", str(tmp_path / "rl.npy")]
    return argv, files


def test_linear_scores_the_queries_with_a_classifier_of_the_references(feature_files, capsys):
    argv, files = feature_files
    assert main(argv + ["--linear", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    expected = linear_evaluation(files["r.npy"], files["rl.npy"], files["q.npy"], files["ql.npy"])
    assert result["linear_accuracy"] == expected.accuracy >= 0.9
    assert result["linear_weight_decay"] == expected.weight_decay
    assert "precision_at_1" in result  # the retrieval scores are still there
    assert main(argv) == 0
    assert "linear_accuracy" not in capsys.readouterr().out  # only when asked for
    assert main(argv + ["--linear"]) == 0
    printed = capsys.readouterr().out
    lines = dict(line.split() for line in printed.splitlines())
    assert lines["linear_accuracy"] == f"{expected.accuracy:.4f}"
    assert float(lines["linear_weight_decay"]) == expected.weight_decay


def test_linear_without_training_features_is_refused(feature_files, capsys):
    argv, _ = feature_files
    alone = argv[:5]  # the queries and their labels, no references
    assert main(alone + ["--linear"]) == 2
    assert "--linear fits on training features" in capsys.readouterr().err


def test_a_checkpoint_with_a_dataset_and_the_train_flag(tmp_path, capsys):
    out = tmp_path / "run"
    train = ["train", "--method", "simclr", "--dataset", "digits", "--out", str(out)]
    train += ["--epochs", "1", "--batch-size", "64", "--steps-per-epoch", "2", "--device", "cpu"]
    assert main(train + ["--no-linear-probe", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    assert not any(key.startswith("probe") for key in metrics)
    resolved = json.loads((out / "resolved.json").read_text())
    assert resolved["linear_probe"] is False
    checkpoint = str(out / "checkpoints" / "last.pt")
    argv = ["evaluate", "--checkpoint", checkpoint, "--dataset", "digits", "--linear", "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0.5 < result["linear_accuracy"] <= 1.0

"""The ``metricssl`` command: the demo path and the trainer commands end to end, and bad
arguments."""

import json

import numpy as np
import pytest

from metricssl.cli import main


def test_demo_json_beats_raw_pixels(capsys):
    assert main(["demo", "--epochs", "8", "--no-plots", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    ours, raw = result["scores"]["metricssl"], result["scores"]["raw pixels"]
    assert set(ours) >= {"precision_at_1", "mean_average_precision_at_r", "NMI"}
    assert ours["mean_average_precision_at_r"] > raw["mean_average_precision_at_r"]
    assert len(result["examples"]) == 3


def test_demo_writes_pictures(tmp_path, capsys):
    assert main(["demo", "--epochs", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("umap.png", "retrieval.png"):
        path = tmp_path / name
        assert path.stat().st_size > 0 and str(path) in out


@pytest.mark.parametrize(
    "argv",
    [["demo", "--epochs", "0"], ["demo", "--dataset", "cifar"], ["train"], []],
)
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


# -- train / embed / evaluate / plot --------------------------------------------------------

TINY_TRAIN = ["--epochs", "1", "--batch-size", "64", "--steps-per-epoch", "3", "--device", "cpu"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    argv = ["train", "--method", "simclr", "--dataset", "digits", "--out", str(out), "--json"]
    assert main(argv + TINY_TRAIN) == 0
    path = out / "checkpoints" / "last.pt"
    assert path.is_file()
    return path


def test_train_json_reports_the_final_epoch(tmp_path, capsys):
    argv = ["train", "--method", "byol", "--dataset", "digits", "--out", str(tmp_path)]
    assert main(argv + TINY_TRAIN + ["--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["checkpoint"] == str(tmp_path / "checkpoints" / "last.pt")
    assert result["epoch"] == 1 and result["metrics"]["step"] == 3
    assert np.isfinite(result["metrics"]["loss"])
    assert 0 <= result["metrics"]["knn_accuracy"] <= 1


def test_train_prints_metrics(tmp_path, capsys):
    argv = ["train", "--method", "simsiam", "--dataset", "digits", "--out", str(tmp_path)]
    assert main(argv + TINY_TRAIN) == 0
    out = capsys.readouterr().out
    assert "loss:" in out and "knn_accuracy:" in out and "last.pt" in out


def test_embed_writes_npy_and_safetensors(checkpoint, tmp_path, capsys):
    output = tmp_path / "sub" / "test.npy"
    argv = ["embed", "--checkpoint", str(checkpoint), "--dataset", "digits"]
    assert main(argv + ["--output", str(output)]) == 0
    embeddings = np.load(output)
    assert embeddings.shape == (359, 128) and np.isfinite(embeddings).all()
    assert sorted(p.name for p in output.parent.iterdir()) == ["test.npy"]  # no temp file left

    safetensors = pytest.importorskip("safetensors.torch")
    output = tmp_path / "train.safetensors"
    assert main(argv + ["--split", "train", "--output", str(output), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["shape"] == [1438, 128]
    tensors = safetensors.load_file(str(output))
    assert tensors["embeddings"].shape == (1438, 128) and tensors["labels"].shape == (1438,)


def test_evaluate_json(checkpoint, capsys):
    argv = ["evaluate", "--checkpoint", str(checkpoint), "--dataset", "digits", "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    keys = {"precision_at_1", "r_precision", "mean_average_precision_at_r", "knn_accuracy"}
    assert set(result) == keys | {"nmi", "ami"}
    assert all(0 <= result[k] <= 1 for k in keys | {"nmi"})
    assert -1 <= result["ami"] <= 1
    # A trained-for-3-steps encoder is still far better than chance on digits.
    assert result["precision_at_1"] > 0.5


def test_plot_writes_png(checkpoint, tmp_path, capsys):
    output = tmp_path / "pca.png"
    argv = ["plot", "--checkpoint", str(checkpoint), "--dataset", "digits", "--method", "pca"]
    assert main(argv + ["--output", str(output)]) == 0
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(output) in capsys.readouterr().out


def _error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    return lines[-1]


def test_corrupted_checkpoint_exits_2(checkpoint, tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(checkpoint.read_bytes()[:1000])
    assert main(["evaluate", "--checkpoint", str(bad), "--dataset", "digits"]) == 2
    line = _error_line(capsys)
    assert line.startswith("metricssl evaluate: error: ") and "corrupted or truncated" in line


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["embed", "--dataset", "digits", "--output", "x.npy", "--checkpoint", "nope.pt"],
            "no checkpoint",
        ),
        (["plot", "--dataset", "digits", "--output", "x.jpg", "--checkpoint", "c.pt"], ".png"),
        (
            ["train", "--method", "simclr", "--dataset", "digits", "--loss", "TripletMarginLoss"],
            "supervised",
        ),
    ],
)
def test_bad_values_exit_2_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith(f"metricssl {argv[0]}: error: ") and message in err


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--method", "swav", "--dataset", "digits"],
        ["train", "--method", "simclr", "--dataset", "imagenet"],
        ["train", "--method", "simclr", "--dataset", "digits", "--lr", "-1"],
        ["evaluate", "--dataset", "digits"],
        [
            "plot",
            "--checkpoint",
            "c.pt",
            "--dataset",
            "digits",
            "--method",
            "mds",
            "--output",
            "x.png",
        ],
    ],
)
def test_bad_trainer_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert f"metricssl {argv[0]}: error:" in _error_line(capsys)


@pytest.mark.parametrize("command", ["train", "embed", "evaluate", "plot"])
def test_help_shows_examples(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"metricssl {command} " in out and "--json" in out

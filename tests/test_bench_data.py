"""benchmarks/bench_data.py: the PNG tree holds Fashion-MNIST's pixels and labels and is
written once; both cases train and are scored, in this process, on a few hundred images."""

import json

import pytest
import torch

from benchmarks import bench_data
from metricssl.data import ImageFolder, load_fashion_mnist


@pytest.fixture(scope="module", autouse=True)
def fashion_mnist():
    try:
        load_fashion_mnist(split="test", progress=False)
    except OSError:  # FileNotFoundError included
        pytest.skip("Fashion-MNIST is not installed (Debian's dataset-fashion-mnist)")


def test_the_tree_holds_the_pixels_and_labels_and_is_written_once(tmp_path):
    tree = bench_data.png_tree(tmp_path, n_train=40, n_test=12, progress=False)
    for split, n in (("train", 40), ("test", 12)):
        images, labels = load_fashion_mnist(split=split, progress=False)
        files = ImageFolder(tree / split, mode="L")
        assert len(files) == n and files.classes == sorted(files.classes, key=int)
        for i, (path, _) in enumerate(files.samples):
            image, label = files[i]
            index = int(path.stem)  # the image's index in Fashion-MNIST
            assert int(files.classes[label]) == int(labels[index])
            assert torch.equal(image, images[index])
    first = next((tree / "train").iterdir())
    written = {p: p.stat().st_mtime_ns for p in first.iterdir()}
    assert bench_data.png_tree(tmp_path, n_train=40, n_test=12, progress=False) == tree
    assert {p: p.stat().st_mtime_ns for p in first.iterdir()} == written
    # A tree without its completion mark, and what a killed run left, are written again.
    (tree / bench_data.COMPLETE).unlink()
    leftover = tree.with_name(tree.name + ".partial")
    (leftover / "junk").mkdir(parents=True)
    assert bench_data.png_tree(tmp_path, n_train=40, n_test=12, progress=False) == tree
    assert not leftover.exists() and (tree / bench_data.COMPLETE).is_file()
    assert len(ImageFolder(tree / "train")) == 40


def test_quick_run_in_process_trains_and_scores_both_cases(tmp_path, capsys):
    payload = bench_data.main(
        [
            "--quick",
            "--in-process",
            "--train-images",
            "200",
            "--test-images",
            "50",
            "--batch-size",
            "32",
            "--steps",
            "2",
            "--num-workers",
            "1",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--results-dir",
            str(tmp_path),
            "--no-progress",
        ]
    )
    assert "memory/folder" in capsys.readouterr().out
    saved = json.loads((tmp_path / "bench_data_quick.json").read_text())
    assert saved["results"].keys() == payload["results"].keys() == {"memory", "folder"}
    for case, row in saved["results"].items():
        assert row["status"] == "ok", row
        assert row["steps"] == 2 and row["batch_size"] == 32
        assert row["images_per_second"] > 0 and 0 <= row["test_p_at_1"] <= 1
        assert row["num_workers"] == (1 if case == "folder" else 0)
    assert saved["folder_slowdown"] == pytest.approx(
        saved["results"]["memory"]["images_per_second"]
        / saved["results"]["folder"]["images_per_second"]
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--train-images", "0"],
        ["--test-images", "10001"],
        ["--num-workers", "-1"],
        ["--steps", "x"],
    ],
)
def test_bad_arguments_are_refused(argv):
    with pytest.raises(SystemExit):
        bench_data.parse_args(argv)

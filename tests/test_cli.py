"""The ``metricssl`` command: the demo path and the trainer commands end to end, and bad
arguments."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from metricssl import cli as cli_module
from metricssl.cli import main
from metricssl.ssl import datasets
from metricssl.ssl import trainer as trainer_module


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
    [["demo", "--epochs", "0"], ["demo", "--dataset", "cifar"], []],
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


def test_train_on_an_image_folder_with_workers(tmp_path, capsys, monkeypatch):
    pil = pytest.importorskip("PIL.Image")
    folder = tmp_path / "images"
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (folder / cls).mkdir(parents=True)
        for i in range(16):
            image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            pil.fromarray(image).save(folder / cls / f"{i}.png")
    seen = []
    real = datasets.resolve_data

    def recording(dataset, *args, **kwargs):
        data = real(dataset, *args, **kwargs)
        seen.append(data.num_workers)
        return data

    monkeypatch.setattr(trainer_module, "resolve_data", recording)
    argv = ["train", "--method", "simclr", "--dataset", str(folder), "--out", str(tmp_path)]
    tiny = ["--epochs", "1", "--batch-size", "8", "--steps-per-epoch", "2", "--device", "cpu"]
    assert main(argv + tiny + ["--num-workers", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["step"] == 2
    assert seen == [2]


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


def test_embed_shards(checkpoint, tmp_path, capsys):
    from metricssl.core.digest import file_digest
    from metricssl.index.shards import ShardManifest

    argv = ["embed", "--checkpoint", str(checkpoint), "--dataset", "digits"]
    assert main(argv + ["--output", str(tmp_path / "all.npy")]) == 0
    shards = ["--shards", str(tmp_path / "shards"), "--shard-rows", "100", "--json"]
    assert main(argv + shards) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert report["shape"] == [359, 128] and report["parts"] == report["parts_written"] == 4
    manifest = ShardManifest.read(tmp_path / "shards", verify=True)
    assert manifest.encoder_sha256 == file_digest(checkpoint)
    rows = np.concatenate([x for _, x in manifest.iter_batches(1000)])
    np.testing.assert_allclose(rows, np.load(tmp_path / "all.npy"), rtol=0, atol=1e-6)
    assert main(argv + shards) == 0  # a rerun keeps every part
    assert json.loads(capsys.readouterr().out)["parts_kept"] == 4
    assert main(argv + shards[:4] + ["--dtype", "float16"]) == 2
    assert "another run (dtype 'float32' -> 'float16')" in capsys.readouterr().err
    assert main(argv + ["--output", str(tmp_path / "x.npy"), "--dtype", "float16"]) == 2
    assert "--dtype goes with --shards" in capsys.readouterr().err


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
        (["train"], "train needs --method (or method: in the --config file)"),
        (["demo", "--data-dir", "/nonexistent/x"], "--data-dir '/nonexistent/x': no such folder"),
        (["train", "--method", "byol"], "train needs --dataset or --data"),
        (["evaluate", "--dataset", "digits"], "--dataset and --data need --checkpoint"),
        (["evaluate", "--checkpoint", "c.pt"], "give --dataset NAME or --data PATH, or --embed"),
        (["embed", "--checkpoint", "c.pt", "--output", "x.npy"], "give --dataset NAME or --data"),
        (
            ["evaluate", "--embeddings", "e.npy", "--checkpoint", "c.pt"],
            "--checkpoint goes with --dataset or --data",
        ),
        (
            ["plot", "--embeddings", "e.npy", "--split", "test", "--output", "x.png"],
            "--split goes with --dataset",
        ),
        (
            ["plot", "--checkpoint", "c.pt", "--data", ".", "--data-dir", ".", "--output", "x.png"],
            "--data-dir goes with --dataset",
        ),
        (
            ["evaluate", "--checkpoint", "c.pt", "--dataset", "digits", "--labels", "l.npy"],
            "--labels goes with --embeddings",
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
        ["train", "--method", "no_such_method", "--dataset", "digits"],
        ["train", "--method", "simclr", "--dataset", "imagenet"],
        ["train", "--method", "simclr", "--dataset", "digits", "--lr", "-1"],
        ["train", "--method", "simclr", "--dataset", "digits", "--num-workers", "-1"],
        ["evaluate", "--dataset", "digits", "--data", "."],
        ["train", "--method", "simclr", "--dataset", "digits", "--data", "."],
        ["train", "--method", "simclr", "--data", "/nonexistent/images"],
        ["train", "--method", "simclr", "--dataset", "digits", "--no-resume", "--resume", "x"],
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


# -- index build / index search -------------------------------------------------------------


@pytest.fixture
def vectors(tmp_path):
    """300 x 16 float32 database vectors in db.npy, and its first 4 rows as queries."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    np.save(tmp_path / "db.npy", x)
    np.save(tmp_path / "q.npy", x[:4])
    return x


def _build(tmp_path, *extra):
    output = tmp_path / "db.msidx"
    argv = ["index", "build", str(tmp_path / "db.npy"), "--output", str(output), *extra]
    return main(argv), output


@pytest.mark.parametrize(
    "options, factory",
    [
        ([], "Flat"),
        (["--kind", "hnsw", "--metric", "cosine"], "HNSW32,Flat"),
        (["--kind", "ivf_flat", "--nlist", "4", "--nprobe", "4", "--metric", "ip"], "IVF4,Flat"),
        (["--kind", "ivf_pq", "--nlist", "2", "--m", "4", "--nbits", "4"], "IVF2,PQ4x4"),
        (["--factory", "IVF4,Flat", "--nprobe", "4"], "IVF4,Flat"),
    ],
)
def test_index_build_every_kind_then_search_finds_each_query(
    vectors, tmp_path, capsys, options, factory
):
    from metricssl.index import EmbeddingIndex

    code, output = _build(tmp_path, *options, "--json")
    assert code == 0
    built = json.loads(capsys.readouterr().out)
    assert built["output"] == str(output) and built["ntotal"] == 300 and built["dim"] == 16
    assert built["factory"] == factory
    index = EmbeddingIndex.load(output)
    assert len(index) == 300 and index.factory == factory

    argv = ["index", "search", str(output), str(tmp_path / "q.npy"), "-k", "3", "--json"]
    assert main(argv) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["queries"] == 4 and found["k"] == 3 and found["output"] is None
    if "PQ" not in factory:  # lossy codes may rank a near neighbour first
        # Each query is a stored vector: its own nearest under l2 and cosine; under inner
        # product the largest score can belong to a longer vector.
        expected = (vectors[:4] @ vectors.T).argmax(1) if "ip" in options else np.arange(4)
        assert [row[0] for row in found["ids"]] == expected.tolist()
    assert np.asarray(found["ids"]).shape == (4, 3)


def test_index_search_prints_and_writes_every_format(vectors, tmp_path, capsys):
    assert _build(tmp_path, "--metric", "l2")[0] == 0
    index_file, queries = str(tmp_path / "db.msidx"), str(tmp_path / "q.npy")
    capsys.readouterr()
    assert main(["index", "search", index_file, queries, "-k", "2", "--show", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert (
        out[0].startswith("query 0: 0 (0)")
        and out[3] == "... 1 more queries (--show N prints more)"
    )

    exact = ((vectors[:4, None] - vectors[None]) ** 2).sum(-1)
    expected_ids = np.argsort(exact, axis=1)[:, :2]
    for name in ("ids.npy", "res.npz", "res.json"):
        output = tmp_path / "out" / name
        argv = ["index", "search", index_file, queries, "-k", "2", "--output", str(output)]
        assert main(argv) == 0
        assert f"to {output}" in capsys.readouterr().out
        if name.endswith(".npy"):
            ids = np.load(output)
        elif name.endswith(".npz"):
            stored = np.load(output)
            ids = stored["ids"]
            np.testing.assert_allclose(
                stored["distances"], np.sort(exact, axis=1)[:, :2], rtol=1e-4, atol=1e-4
            )
        else:
            stored = json.loads(output.read_text())
            ids = np.asarray(stored["ids"])
            assert stored["metric"] == "l2" and stored["k"] == 2
        assert ids.dtype == np.int64 and (ids == expected_ids).all()


def test_index_missing_results_are_null_in_json(vectors, tmp_path, capsys):
    # One IVF list of four probed: fewer candidates than the 300 columns returned.
    assert _build(tmp_path, "--kind", "ivf_flat", "--nlist", "4", "--nprobe", "1")[0] == 0
    capsys.readouterr()
    output = tmp_path / "res.json"
    argv = ["index", "search", str(tmp_path / "db.msidx"), str(tmp_path / "q.npy")]
    assert main(argv + ["-k", "301", "--output", str(output), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    for result in (printed, json.loads(output.read_text())):
        assert result["ids"][0][-1] == -1 and result["distances"][0][-1] is None
        assert result["distances"][0][0] == 0.0


def test_index_build_from_safetensors_with_ids(vectors, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    safetensors = pytest.importorskip("safetensors.torch")
    path = tmp_path / "db.safetensors"
    labels = torch.arange(300)
    # bfloat16: read through torch, converted to float32 by the index.
    safetensors.save_file(
        {"embeddings": torch.from_numpy(vectors).bfloat16(), "labels": labels}, path
    )
    (tmp_path / "ids.txt").write_text("\n".join(str(1000 + i) for i in range(300)))
    output = tmp_path / "st.msidx"
    argv = ["index", "build", str(path), "--ids", str(tmp_path / "ids.txt"), "--metric", "cosine"]
    assert main(argv + ["--output", str(output)]) == 0
    assert f"wrote {output}: 300 x 16 vectors, kind flat (Flat), metric cosine" in (
        capsys.readouterr().out
    )

    safetensors.save_file({"queries": torch.from_numpy(vectors[:2])}, tmp_path / "q.safetensors")
    argv = ["index", "search", str(output), str(tmp_path / "q.safetensors"), "-k", "1", "--json"]
    assert main(argv) == 0  # the file's only tensor is used
    assert json.loads(capsys.readouterr().out)["ids"] == [[1000], [1001]]


def test_index_build_from_a_checkpoint(checkpoint, tmp_path, capsys):
    output = tmp_path / "digits.msidx"
    argv = ["index", "build", "--checkpoint", str(checkpoint), "--dataset", "digits"]
    assert main(argv + ["--metric", "cosine", "--output", str(output), "--json"]) == 0
    built = json.loads(capsys.readouterr().out)
    # The training split by default, embedded as `metricssl embed` does.
    assert built["ntotal"] == 1438 and built["dim"] == 128
    assert built["source"] == f"{checkpoint} on digits train"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--checkpoint", "c.pt"], "not both"),
        (["--dataset", "digits"], "--dataset goes with --checkpoint"),
        (["--tensor", "x"], "--tensor is for .safetensors"),
        (["--kind", "flat", "--factory", "Flat"], "either kind or factory"),
        (["--kind", "ivf_pq", "--m", "5"], "must divide dim"),
        (["--kind", "ivf_flat", "--nlist", "1000"], "at least 1000 vectors"),
        (["--ids", "q.npy"], "integers"),
        (["--ids", "missing.npy"], "no --ids file"),
    ],
)
def test_index_build_bad_values_exit_2_with_one_line(vectors, tmp_path, capsys, extra, message):
    extra = [str(tmp_path / e) if e.endswith(".npy") else e for e in extra]
    code, output = _build(tmp_path, *extra)
    assert code == 2 and not output.exists()
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("metricssl index build: error: ") and message in err


@pytest.mark.parametrize(
    "files, message",
    [
        ({"e.txt": b"1 2 3"}, "must be a .npy or .safetensors file"),
        ({"e.npy": b"not an array"}, "not a readable .npy array"),
        ({"e.safetensors": b"garbage" * 3}, "not a readable .safetensors file"),
        ({}, "no embeddings file"),
    ],
)
def test_index_build_unreadable_embeddings_exit_2(tmp_path, capsys, files, message):
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    name = next(iter(files), "e.npy")
    argv = ["index", "build", str(tmp_path / name), "--output", str(tmp_path / "x.msidx")]
    assert main(argv) == 2
    assert message in _error_line(capsys)


def test_index_build_needs_a_source(tmp_path, capsys):
    assert main(["index", "build", "--output", str(tmp_path / "x.msidx")]) == 2
    assert "give an embeddings file" in _error_line(capsys)
    argv = ["index", "build", "--checkpoint", "c.pt", "--output", str(tmp_path / "x.msidx")]
    assert main(argv) == 2
    assert "--checkpoint needs --dataset" in _error_line(capsys)


def test_index_search_bad_values_exit_2(vectors, tmp_path, capsys):
    assert _build(tmp_path)[0] == 0
    capsys.readouterr()
    index_file, queries = str(tmp_path / "db.msidx"), str(tmp_path / "q.npy")
    np.save(tmp_path / "narrow.npy", vectors[:2, :8])
    cases = [
        ([str(tmp_path / "none.msidx"), queries], "no index file"),
        ([queries, queries], "not a metricssl index file"),
        ([index_file, str(tmp_path / "narrow.npy")], "dimension 8"),
        ([index_file, queries, "--output", "x.csv"], ".npy or .npz or .json"),
    ]
    for argv, message in cases:
        assert main(["index", "search", *argv]) == 2
        line = _error_line(capsys)
        assert line.startswith("metricssl index search: error: ") and message in line


@pytest.mark.parametrize(
    "argv",
    [
        ["index"],
        ["index", "build", "db.npy"],  # --output is required
        ["index", "build", "db.npy", "--output", "x", "--kind", "lsh"],
        ["index", "build", "db.npy", "--output", "x", "--metric", "hamming"],
        ["index", "build", "db.npy", "--output", "x", "--nlist", "0"],
        ["index", "search", "x.msidx"],
        ["index", "search", "x.msidx", "q.npy", "-k", "0"],
        ["bench", "--suite", "speed"],
        ["bench", "--only", "TripletMarginLoss"],  # script arguments go after --
    ],
)
def test_bad_index_and_bench_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "error:" in _error_line(capsys)


@pytest.mark.parametrize("command", [["index", "build"], ["index", "search"], ["bench"]])
def test_new_commands_help_shows_examples(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"metricssl {' '.join(command)} " in out and "--json" in out


# -- bench ----------------------------------------------------------------------------------

# A stand-in for a benchmark script: prints its arguments as a table row, writes its JSON
# result like the real ones (results/<name>.json) and fails on request.
FAKE_BENCH = """
import json, pathlib, sys
args = sys.argv[1:]
if "--fail" in args:
    sys.exit(3)
print("| case | args |")
print("| fake | " + " ".join(args) + " |")
results = pathlib.Path(__file__).parent / "results"
results.mkdir(exist_ok=True)
name = pathlib.Path(__file__).stem + ("_quick" if {"--quick", "--smoke"} & set(args) else "")
(results / (name + ".json")).write_text(json.dumps({"args": args}))
"""


@pytest.fixture
def fake_benchmarks(tmp_path):
    folder = tmp_path / "benchmarks"
    folder.mkdir()
    for suite in ("losses", "eval", "index", "ssl"):
        (folder / f"bench_{suite}.py").write_text(FAKE_BENCH)
    return folder


def test_bench_runs_the_script_and_prints_its_table(fake_benchmarks, capfd):
    argv = ["bench", "--suite", "losses", "--benchmarks-dir", str(fake_benchmarks)]
    assert main(argv + ["--", "--only", "TripletMarginLoss"]) == 0
    out = capfd.readouterr().out
    assert "| fake | --only TripletMarginLoss |" in out
    assert f"results in {fake_benchmarks / 'results' / 'bench_losses.json'}" in out


def test_bench_quick_json_maps_each_suite_to_its_quick_flag(fake_benchmarks, capfd):
    argv = ["bench", "--suite", "losses", "--suite", "index", "--quick", "--json"]
    assert main(argv + ["--benchmarks-dir", str(fake_benchmarks)]) == 0
    result = json.loads(capfd.readouterr().out)
    assert result["benchmarks_dir"] == str(fake_benchmarks.resolve())
    losses, index = result["runs"]
    assert losses["suite"] == "losses" and losses["args"] == ["--quick"]
    assert index["suite"] == "index" and index["args"] == ["--smoke"]
    assert "| fake | --smoke |" in index["output"] and index["returncode"] == 0
    assert index["results"] == {"bench_index_quick.json": {"args": ["--smoke"]}}
    assert index["results_files"] == [
        str(fake_benchmarks.resolve() / "results/bench_index_quick.json")
    ]


def test_bench_failing_script_stops_and_reports_its_status(fake_benchmarks, capfd):
    argv = ["bench", "--suite", "eval", "--benchmarks-dir", str(fake_benchmarks), "--json"]
    assert main(argv + ["--", "--fail"]) == 3
    captured = capfd.readouterr()
    assert json.loads(captured.out)["runs"][0]["returncode"] == 3
    assert captured.err.strip().splitlines()[-1] == (
        "metricssl bench: error: bench_eval.py exited with status 3"
    )


def test_bench_without_the_scripts_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    import metricssl.cli as cli

    # As in a wheel install: no benchmarks/ next to the package, none in the current folder.
    monkeypatch.setattr(cli, "PACKAGE_DIR", tmp_path / "site-packages" / "metricssl")
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--suite", "losses", "--quick"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not the installed package" in err
    assert main(["bench", "--benchmarks-dir", str(tmp_path)]) == 2
    assert "has no bench_losses.py, bench_eval.py" in _error_line(capsys)
    (tmp_path / "benchmarks").mkdir()
    assert main(["bench", "--suite", "ssl", "--", "--epochs", "1"]) == 2  # still no script
    assert main(["bench", "--", "--epochs", "1"]) == 2
    assert "name exactly one --suite" in _error_line(capsys)


def test_bench_finds_the_repository_scripts():
    from metricssl.cli import BENCH_SUITES, find_benchmarks_dir

    folder = find_benchmarks_dir(list(BENCH_SUITES))
    assert folder.name == "benchmarks" and (folder / "_harness.py").is_file()


def test_train_offers_every_registered_method():
    from metricssl import cli
    from metricssl.ssl import METHODS
    from metricssl.ssl.registry import ALIASES

    train = cli.build_parser()._subparsers._group_actions[0].choices["train"]
    offered = {a.dest: a.choices for a in train._actions if a.choices}
    assert sorted(offered["method"]) == sorted([*METHODS, *ALIASES])
    # --backbone: names or specs (tests/test_cli_backbone.py).


def test_train_under_torchrun_reports_once_and_exits_cleanly(tmp_path):
    # Two CPU processes through torch.distributed.run (what `torchrun` runs), as users launch it.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        + ["-m", "metricssl.cli", "train", "--method", "simclr", "--dataset", "digits"]
        + ["--out", str(tmp_path), "--json"]
        + ["--epochs", "1", "--batch-size", "32", "--steps-per-epoch", "2", "--device", "cpu"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1  # rank 0 only
    result = json.loads(lines[0])
    assert result["epoch"] == 1 and result["metrics"]["step"] == 2
    assert (tmp_path / "checkpoints" / "last.pt").is_file()
    assert "terminate called" not in run.stderr
    assert "Warning" not in run.stderr


def test_index_search_k_beyond_the_index_returns_every_vector(vectors, tmp_path, capsys):
    # -k 1000000000 once allocated (queries x k) arrays and died with a MemoryError traceback.
    assert _build(tmp_path)[0] == 0
    capsys.readouterr()
    index_file, queries = str(tmp_path / "db.msidx"), str(tmp_path / "q.npy")
    output = tmp_path / "res.npz"
    argv = ["index", "search", index_file, queries, "-k", "1000000000", "--show", "1"]
    assert main(argv + ["--output", str(output)]) == 0
    out = capsys.readouterr().out
    assert "-k 1000000000: the index holds 300 vectors, so 300 per query" in out
    assert f"wrote 4 x 300 results to {output}" in out
    ids = np.load(output)["ids"]
    assert ids.shape == (4, 300) and (np.sort(ids, axis=1) == np.arange(300)).all()
    assert main(["index", "search", index_file, queries, "-k", "1000000000", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["k"] == 1000000000 and np.asarray(found["ids"]).shape == (4, 300)


def test_index_search_of_a_crafted_file_exits_2_with_one_line(vectors, tmp_path, capsys):
    import hashlib
    import struct

    from metricssl.index.index_file import END_MAGIC, MAGIC

    assert _build(tmp_path)[0] == 0
    capsys.readouterr()
    u64 = struct.Struct("<Q")
    header = b"[" * 500_000  # json.loads would recurse 500k levels deep
    payload = b"IxF2"
    forged = tmp_path / "forged.msidx"
    forged.write_bytes(
        MAGIC
        + u64.pack(len(header))
        + header
        + payload
        + u64.pack(len(payload))
        + hashlib.sha256(header + payload).digest()
        + END_MAGIC
    )
    assert main(["index", "search", str(forged), str(tmp_path / "q.npy")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("metricssl index search: error: ") and "nests 500000 levels" in err


# -- train: config files, checks before any work, resume ------------------------------------


def _train(tmp_path, *extra, out=None):
    argv = ["train", "--method", "simclr", "--dataset", "digits", "--out", str(out or tmp_path)]
    return main(argv + TINY_TRAIN + list(extra))


def test_train_config_file_flags_override_and_the_resolved_file(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(
        "method: byol\ndataset: digits\nepochs: 3\nseed: 5\nknn_k: 7\nwarmup_epochs: 0\n"
        "backbone_kwargs: {embedding_dim: 16}\n"
    )
    out = tmp_path / "run"
    argv = ["train", "--config", str(config), "--out", str(out), "--json"]
    tiny = ["--epochs", "1", "--batch-size", "64", "--steps-per-epoch", "2", "--device", "cpu"]
    assert main(argv + tiny + ["--set", "knn_every=1", "--seed", "6"]) == 0
    assert json.loads(capsys.readouterr().out)["epoch"] == 1  # --epochs beat the file's 3
    resolved = json.loads((out / "resolved.json").read_text())
    assert resolved["method"] == "byol" and resolved["epochs"] == 1 and resolved["seed"] == 6
    assert resolved["knn_k"] == 7 and resolved["backbone_kwargs"] == {"embedding_dim": 16}
    # The method's defaults are recorded as used, not as null.
    assert resolved["batch_size"] == 64 and isinstance(resolved["lr"], float)
    assert resolved["optimizer"] and isinstance(resolved["hparams"], dict)
    from metricssl.ssl.checkpoint import read_checkpoint

    state = read_checkpoint(out / "checkpoints" / "last.pt")
    assert state["config"]["training"]["seed"] == 6
    assert state["config"]["build"]["backbone_kwargs"] == {"embedding_dim": 16}
    # The resolved file is a config for the same run.
    again = tmp_path / "again"
    assert main(["train", "--config", str(out / "resolved.json"), "--out", str(again)]) == 0
    assert read_checkpoint(again / "checkpoints" / "last.pt")["config"] == state["config"]


def test_train_config_with_an_unknown_key_exits_2_naming_it(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text('method = "simclr"\ndataset = "digits"\nlearning_rate = 0.1\n')
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(out)]) == 2
    line = _error_line(capsys)
    assert "unknown Trainer argument 'learning_rate'" in line and not out.exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["--data-dir", "/nonexistent/data", "--out", "OUT"],
            "--data-dir '/nonexistent/data': no such folder",
        ),
        (["--set", "device=cuda:0", "--out", "OUT"], "--device cuda:0: "),
        (["--set", "out=FILE/run"], "not a folder"),
        (["--out", "FILE"], "not a folder"),
    ],
)
def test_train_checks_before_any_work(tmp_path, capsys, monkeypatch, extra, message):
    if "cuda" in message and __import__("torch").cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    (tmp_path / "file").write_text("")
    extra = [e.replace("FILE", str(tmp_path / "file")).replace("OUT", str(tmp_path)) for e in extra]

    def no_data(*args, **kwargs):
        raise AssertionError("data were read before the checks")

    monkeypatch.setattr(trainer_module, "resolve_data", no_data)
    assert main(["train", "--method", "simclr", "--dataset", "digits", *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and message in err


def test_train_resume_reports_refuses_changes_and_applies_them_when_allowed(
    tmp_path, capsys, monkeypatch
):
    from metricssl.ssl.checkpoint import read_checkpoint

    assert _train(tmp_path, "--json") == 0
    capsys.readouterr()
    path = tmp_path / "checkpoints" / "last.pt"
    before = path.read_bytes()

    # The same target again: said, exit 0, nothing trained.
    assert _train(tmp_path) == 0
    out = capsys.readouterr().out
    assert f"{path} is at epoch 1: --epochs 1 is already reached, nothing to train" in out
    assert path.read_bytes() == before

    # Changed settings: refused with the differences, nothing trained (nor read).
    def no_data(*args, **kwargs):
        raise AssertionError("data were read for a refused resume")

    with monkeypatch.context() as patch:
        patch.setattr(trainer_module, "resolve_data", no_data)
        assert _train(tmp_path, "--epochs", "2", "--lr", "0.5", "--seed", "7") == 2
    line = _error_line(capsys)
    assert f"{path} was trained with other settings: " in line
    for change in ("epochs 1 -> 2", "seed 0 -> 7", "-> 0.5"):
        assert change in line
    assert "--allow-changed-settings" in line and path.read_bytes() == before

    # Allowed: resumed from epoch 1, said so, and the new learning rate is the one used.
    assert _train(tmp_path, "--epochs", "2", "--lr", "0.5", "--allow-changed-settings") == 0
    out = capsys.readouterr().out
    assert f"resuming {path} at epoch 1/2 (step 3) with changed settings: " in out
    state = read_checkpoint(path)
    assert state["epoch"] == 2 and state["step"] == 6
    assert state["config"]["training"]["lr"] == 0.5
    assert set(state["scheduler"]["base_lrs"]) == {0.5}
    resolved = json.loads((tmp_path / "resolved.json").read_text())
    # The permission is for this resume: a rerun of the resolved file asks again.
    assert resolved["lr"] == 0.5 and "allow_changed_settings" not in resolved


def test_train_resume_json_and_reached_json(tmp_path, capsys):
    assert _train(tmp_path, "--json") == 0
    assert json.loads(capsys.readouterr().out)["resumed"] is None
    assert _train(tmp_path, "--json", "--epochs", "2", "--allow-changed-settings") == 0
    resumed = json.loads(capsys.readouterr().out)["resumed"]
    assert resumed["epoch"] == 1 and resumed["changed"] == ["epochs 1 -> 2"]
    assert _train(tmp_path, "--json", "--epochs", "2") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["epoch"] == 2 and "already reached" in result["message"]
    assert np.isfinite(result["metrics"]["loss"])


def test_train_resume_from_a_missing_file_exits_2(tmp_path, capsys):
    assert _train(tmp_path, "--resume", str(tmp_path / "none.pt")) == 2
    assert "no checkpoint to resume from" in _error_line(capsys)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("command", ["evaluate", "embed", "plot"])
def test_device_cuda_without_cuda_is_one_line(checkpoint, tmp_path, capsys, command):
    argv = [command, "--checkpoint", str(checkpoint), "--dataset", "digits", "--device", "cuda"]
    output = {"embed": ["--output", str(tmp_path / "e.npy")], "plot": ["--output", "p.png"]}
    assert main(argv + output.get(command, [])) == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"metricssl {command}: error: --device cuda: this torch is built without "
        "CUDA; use --device cpu (or auto)\n"
        or (err.count("\n") == 1 and "no CUDA GPU is visible" in err)
    )


def test_cifar_not_found_names_the_command_line_flags(tmp_path, capsys):
    argv = ["train", "--method", "simclr", "--dataset", "cifar10", "--data-dir", str(tmp_path)]
    assert main(argv + ["--out", str(tmp_path / "run")]) == 2
    line = _error_line(capsys)
    assert "on the command line: --data-dir FOLDER, or --download to fetch it" in line


# -- evaluate / plot of embedding files from any encoder -------------------------------------


@pytest.fixture
def encoder_files(tmp_path):
    """Two well-separated classes of 8-d vectors as .npy files, and the same in one
    .safetensors file (embeddings and labels), like `metricssl embed` writes."""
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 20)
    vectors = (rng.standard_normal((40, 8)) + 6 * labels[:, None]).astype(np.float32)
    np.save(tmp_path / "q.npy", vectors)
    np.save(tmp_path / "ql.npy", labels)
    np.save(tmp_path / "r.npy", vectors[::2] + 0.01)
    np.save(tmp_path / "rl.npy", labels[::2])
    return tmp_path, vectors, labels


def test_evaluate_embedding_files_equals_the_calculator(encoder_files, capsys):
    from metricssl.eval import AccuracyCalculator

    folder, vectors, labels = encoder_files
    argv = ["evaluate", "--embeddings", str(folder / "q.npy"), "--labels", str(folder / "ql.npy")]
    references = ["--reference-embeddings", str(folder / "r.npy")]
    references += ["--reference-labels", str(folder / "rl.npy")]
    assert main(argv + references + ["--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    calculator = AccuracyCalculator(include=tuple(cli_module.EVALUATE_METRICS), k="max_bin_count")
    expected = calculator.get_accuracy(vectors, labels, vectors[::2] + 0.01, labels[::2])
    for name, key in cli_module.EVALUATE_METRICS.items():
        assert result[key] == pytest.approx(float(expected[name]))
    # Without references: the queries against each other, each one's own entry left out.
    assert main(argv + ["--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    expected = calculator.get_accuracy(vectors, labels)
    assert result["precision_at_1"] == pytest.approx(float(expected["precision_at_1"]))


def test_evaluate_and_plot_a_safetensors_file_with_labels(encoder_files, capsys):
    torch = pytest.importorskip("torch")
    safetensors = pytest.importorskip("safetensors.torch")
    folder, vectors, labels = encoder_files
    path = folder / "e.safetensors"
    safetensors.save_file(
        {"embeddings": torch.from_numpy(vectors), "labels": torch.from_numpy(labels)}, path
    )
    assert main(["evaluate", "--embeddings", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["precision_at_1"] == 1.0
    output = folder / "pca.png"
    argv = ["plot", "--embeddings", str(path), "--method", "pca", "--output", str(output)]
    assert main(argv) == 0
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Labels are optional for a picture.
    argv = ["plot", "--embeddings", str(folder / "q.npy"), "--method", "pca"]
    assert main(argv + ["--output", str(folder / "plain.png"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["points"] == 40


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "--embeddings Q needs --labels FILE"),
        (["--labels", "rl.npy"], "--labels has 20 labels for the 40 vectors of --embeddings"),
        (
            ["--labels", "ql.npy", "--reference-embeddings", "r.npy"],
            "--reference-embeddings R needs --reference-labels FILE",
        ),
        (
            ["--labels", "ql.npy", "--reference-labels", "rl.npy"],
            "--reference-labels goes with --reference-embeddings",
        ),
        (["--labels", "ql.txt"], "--labels must be a .npy or .safetensors file"),
    ],
)
def test_evaluate_embedding_files_bad_values(encoder_files, capsys, extra, message):
    folder = encoder_files[0]
    extra = [str(folder / e) if "." in e else e for e in extra]
    assert main(["evaluate", "--embeddings", str(folder / "q.npy"), *extra]) == 2
    line = _error_line(capsys)
    assert (
        message.replace(" Q ", f" {folder / 'q.npy'} ").replace(" R ", f" {folder / 'r.npy'} ")
        in line
    )


# -- your own images: train, embed, evaluate, plot, index build and search with --data -------


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Two classes (dark, bright) of 12 x 10 RGB images, 16 each."""
    pil = pytest.importorskip("PIL.Image")
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for cls, base in (("dark", 40), ("bright", 210)):
        (folder / cls).mkdir()
        for i in range(16):
            image = np.clip(base + rng.integers(-30, 30, (12, 10, 3)), 0, 255).astype(np.uint8)
            pil.fromarray(image).save(folder / cls / f"{i}.png")
    return folder


@pytest.fixture(scope="module")
def folder_checkpoint(image_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("folder-run")
    argv = ["train", "--method", "simclr", "--data", str(image_folder), "--out", str(out)]
    tiny = ["--epochs", "1", "--batch-size", "8", "--steps-per-epoch", "2", "--device", "cpu"]
    assert main(argv + tiny + ["--set", "backbone_kwargs.embedding_dim=16", "--json"]) == 0
    return out / "checkpoints" / "last.pt"


def test_embed_evaluate_plot_a_folder(folder_checkpoint, image_folder, tmp_path, capsys):
    safetensors = pytest.importorskip("safetensors.torch")
    capsys.readouterr()
    base = ["--checkpoint", str(folder_checkpoint), "--data", str(image_folder)]
    output = tmp_path / "e.safetensors"
    assert main(["embed", *base, "--output", str(output), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "output": str(output),
        "data": str(image_folder),
        "shape": [32, 16],
    }
    tensors = safetensors.load_file(str(output))
    assert tensors["labels"].tolist() == [0] * 16 + [1] * 16  # sorted class folders

    assert main(["evaluate", *base, "--json"]) == 0
    from_checkpoint = json.loads(capsys.readouterr().out)
    assert main(["evaluate", "--embeddings", str(output), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == from_checkpoint  # the same vectors scored
    assert main(["evaluate", *base, "--reference-data", str(image_folder), "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == set(from_checkpoint)

    picture = tmp_path / "pca.png"
    assert main(["plot", *base, "--method", "pca", "--output", str(picture)]) == 0
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_manifest_is_read_like_the_folder(folder_checkpoint, image_folder, tmp_path, capsys):
    # The folder's files in the folder's order, relative to the manifest, labels by name.
    files = sorted(image_folder.glob("*/*.png"), key=lambda p: (p.parent.name, p.name))
    manifest = image_folder / "manifest.csv"
    manifest.write_text(
        "path,label\n" + "".join(f"{p.relative_to(image_folder)},{p.parent.name}\n" for p in files)
    )
    try:
        outputs = []
        for source in (image_folder, manifest):
            output = tmp_path / f"{source.name}.npy"
            argv = ["embed", "--checkpoint", str(folder_checkpoint), "--data", str(source)]
            assert main(argv + ["--output", str(output), "--json"]) == 0
            outputs.append(np.load(output))
        np.testing.assert_array_equal(*outputs)
        argv = ["evaluate", "--checkpoint", str(folder_checkpoint), "--data", str(manifest)]
        assert main(argv + ["--json"]) == 0
        assert 0 <= json.loads(capsys.readouterr().out.splitlines()[-1])["precision_at_1"] <= 1
    finally:
        manifest.unlink()  # the module's folder is shared with other tests


def test_evaluate_an_unlabelled_folder_exits_2(folder_checkpoint, image_folder, capsys):
    argv = ["evaluate", "--checkpoint", str(folder_checkpoint)]
    assert main(argv + ["--data", str(image_folder / "dark")]) == 2
    assert "has no labels" in _error_line(capsys)


def test_index_build_and_search_a_folder(folder_checkpoint, image_folder, tmp_path, capsys):
    pil = pytest.importorskip("PIL.Image")
    capsys.readouterr()
    index = tmp_path / "images.msidx"
    argv = ["index", "build", "--checkpoint", str(folder_checkpoint), "--data", str(image_folder)]
    assert main(argv + ["--output", str(index), "--json"]) == 0
    built = json.loads(capsys.readouterr().out)
    assert built["ntotal"] == 32 and built["source"] == f"{folder_checkpoint} on {image_folder}"

    # A query of another size: resized to the checkpoint's 12 x 10.
    query = tmp_path / "query.png"
    pil.fromarray(np.full((36, 30, 3), 40, np.uint8)).save(query)
    stored = image_folder / "bright" / "10.png"  # the third file of the first class
    argv = ["search", "--checkpoint", str(folder_checkpoint), "--index", str(index), "-k", "4"]
    grid = tmp_path / "grid.png"
    assert (
        main(argv + ["--data", str(image_folder), "--grid", str(grid), str(stored), str(query)])
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["k"] == 4 and result["metric"] == "l2"
    first, second = result["queries"]
    assert first["image"] == str(stored) and second["image"] == str(query)
    nearest = first["neighbours"][0]
    assert nearest == {
        "id": 2,
        "distance": pytest.approx(0, abs=1e-4),
        "path": str(stored),
        "label": "bright",
    }
    assert len(second["neighbours"]) == 4
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # --out: the same JSON in a file; without --data: ids and distances only.
    output = tmp_path / "n.json"
    assert main(argv + ["--out", str(output), str(stored)]) == 0
    assert f"to {output}" in capsys.readouterr().out
    written = json.loads(output.read_text())
    assert written["queries"][0]["neighbours"][0].keys() == {"id", "distance"}


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--grid", "g.png", "IMAGE"], "--grid draws the neighbours: give --data"),
        (["--grid", "g.jpg", "IMAGE"], "--grid must end with .png"),
        (["--out", "n.txt", "IMAGE"], "--out must end with .json"),
        (["missing.png"], "no image file at 'missing.png'"),
    ],
)
def test_search_bad_values_exit_2(
    folder_checkpoint, image_folder, tmp_path, capsys, extra, message
):
    image = str(image_folder / "dark" / "0.png")
    extra = [image if e == "IMAGE" else e for e in extra]
    argv = ["search", "--checkpoint", str(folder_checkpoint), "--index", str(tmp_path / "x.msidx")]
    assert main(argv + extra) == 2
    assert message in _error_line(capsys)


def test_search_nprobe_overrides_the_index(folder_checkpoint, image_folder, tmp_path, capsys):
    index = tmp_path / "ivf.msidx"
    argv = ["index", "build", "--checkpoint", str(folder_checkpoint), "--data", str(image_folder)]
    ivf = ["--kind", "ivf_flat", "--nlist", "2", "--nprobe", "1"]
    assert main(argv + ivf + ["--output", str(index), "--json"]) == 0
    capsys.readouterr()
    image = str(image_folder / "dark" / "0.png")
    argv = ["search", "--checkpoint", str(folder_checkpoint), "--index", str(index), "-k", "32"]
    found = []
    for extra in ([], ["--nprobe", "2"]):
        assert main(argv + extra + [image]) == 0
        found.append(len(json.loads(capsys.readouterr().out)["queries"][0]["neighbours"]))
    # One list of two probed finds part of the 32 images (the rest left out); both find all.
    assert found[0] < 32 and found[1] == 32


def test_train_resume_of_an_unfinished_run_compares_what_the_trainer_resolves(tmp_path, capsys):
    # A run of 2 epochs stopped after the first (as a killed run leaves it).
    trainer = trainer_module.Trainer(
        method="simclr",
        dataset="digits",
        out=tmp_path,
        epochs=2,
        batch_size=64,
        steps_per_epoch=3,
        device="cpu",
        progress=False,
    )
    trainer.fit(epochs=1)
    path = tmp_path / "checkpoints" / "last.pt"
    argv = ["train", "--method", "simclr", "--dataset", "digits", "--out", str(tmp_path)]
    same = ["--epochs", "2", "--batch-size", "64", "--device", "cpu"]
    # steps_per_epoch is known once the data are: compared after the Trainer is built.
    assert main(argv + same + ["--steps-per-epoch", "2"]) == 2
    line = _error_line(capsys)
    assert f"{path} was trained with other settings: steps_per_epoch 3 -> 2." in line
    assert main(argv + same + ["--steps-per-epoch", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["resumed"] == {
        "checkpoint": str(path),
        "epoch": 1,
        "step": 3,
        "epochs": 2,
        "changed": [],
    }
    assert result["epoch"] == 2 and result["metrics"]["step"] == 6


def test_search_help_shows_examples(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["search", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "metricssl search --checkpoint" in out and "--grid" in out

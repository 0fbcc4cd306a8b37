"""The ``metricssl`` command: the demo path and the trainer commands end to end, and bad
arguments."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

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
        ["train", "--method", "mae", "--dataset", "digits"],
        ["train", "--method", "simclr", "--dataset", "imagenet"],
        ["train", "--method", "simclr", "--dataset", "digits", "--lr", "-1"],
        ["train", "--method", "simclr", "--dataset", "digits", "--num-workers", "-1"],
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
    from metricssl.ssl.registry import ALIASES, BACKBONES

    train = cli.build_parser()._subparsers._group_actions[0].choices["train"]
    offered = {a.dest: a.choices for a in train._actions if a.choices}
    assert sorted(offered["method"]) == sorted([*METHODS, *ALIASES])
    assert sorted(offered["backbone"]) == sorted(BACKBONES)


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

"""The ``metricssl`` command: the demo path end to end, and bad arguments."""

import json

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

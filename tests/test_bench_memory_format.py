"""bench_memory_format.py: both layouts timed per method, the ratio reported, bad runs refused."""

import json

import pytest

from benchmarks import bench_memory_format


def test_smoke_run_times_both_layouts(tmp_path, capsys):
    bench_memory_format.main(
        ["--smoke", "--methods", "simclr,pirl", "--threads", "1", "--results-dir", str(tmp_path)]
    )
    assert "speed-up" in capsys.readouterr().out
    results = json.loads((tmp_path / "bench_memory_format_smoke.json").read_text())["results"]
    assert sorted(results) == ["pirl", "simclr"]
    for r in results.values():
        speeds = r["images_per_second"]
        assert set(speeds) == {"contiguous", "channels_last"} and min(speeds.values()) > 0
        assert r["speedup"] == pytest.approx(speeds["channels_last"] / speeds["contiguous"])
        assert all(len(rounds) == 1 for rounds in r["per_round"].values())


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        bench_memory_format.parse_args(["--methods", "simclear"])
    with pytest.raises(SystemExit):
        bench_memory_format.parse_args(["--rounds", "0"])

"""The benchmark helpers: combining processes' measurements (_harness), interleave_losses."""

import pytest

from benchmarks import interleave_losses
from benchmarks._harness import Measurement, median_measurement


def test_median_measurement_takes_the_median_process_and_keeps_every_round():
    rounds = [
        Measurement("ok", time_s=3.0),
        Measurement("ok", time_s=1.0),
        Measurement("error", detail="boom"),
        Measurement("ok", time_s=2.0),
    ]
    chosen = median_measurement(rounds)
    assert chosen.time_s == 2.0
    assert sorted(chosen.round_times_s) == [1.0, 2.0, 3.0]
    # An even count takes the lower median: the reported time is one a process really had.
    assert median_measurement(rounds[:2]).time_s == 1.0


def test_median_measurement_without_a_success_reports_the_first_failure():
    failed = [Measurement("timeout", detail="> 60 s"), Measurement("oom")]
    assert median_measurement(failed).status == "timeout"


def test_interleave_losses_times_both_libraries_and_rejects_bad_runs(capsys):
    interleave_losses.main(["NCALoss", "--sizes", "16", "--runs", "2", "--threads", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["NCALoss N=16 pml ", "NCALoss N=16 ours"]
    assert all("forward" in line and "backward" in line for line in lines)
    with pytest.raises(SystemExit):
        interleave_losses.main(["NCALoss", "--runs", "0"])

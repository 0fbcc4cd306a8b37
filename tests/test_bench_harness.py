"""benchmarks/_harness.py: combining several processes' measurements of one target."""

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

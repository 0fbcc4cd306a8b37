"""benchmarks/gpu_check.py on the CPU: it refuses to run without CUDA, its bookkeeping (time
budget, failing sections, pytest counts, table, JSON) works on made-up results, and its
measuring sections still match the library's API (run on the CPU at toy sizes, so that the
one GPU run does not fail on a renamed argument). No timing is asserted."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch

from benchmarks import gpu_check
from benchmarks._harness import REPO_ROOT


def test_main_without_cuda_exits_2_and_runs_nothing(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ran = []
    monkeypatch.setattr(gpu_check, "run_sections", lambda *a, **k: ran.append(a))
    assert gpu_check.main([], results_dir=tmp_path) == gpu_check.NO_CUDA_EXIT == 2
    assert capsys.readouterr().out == gpu_check.NO_CUDA_MESSAGE + "\n"
    assert not ran and not list(tmp_path.iterdir())


def test_script_without_cuda_prints_one_line_and_exits_2():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--quick"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stdout.splitlines() == [gpu_check.NO_CUDA_MESSAGE]


def test_parse_args():
    args = gpu_check.parse_args(["--quick", "--out", "x"])
    assert args.quick and args.out == "x"
    assert not gpu_check.parse_args([]).quick


@pytest.mark.parametrize(
    "output, counts",
    [
        ("....s\n4 passed, 1 skipped in 2.31s\n", {"passed": 4, "skipped": 1}),
        (
            "FAILED tests/a.py::t - x\n1 failed, 7 passed, 3 deselected, 2 errors in 10.0s",
            {"failed": 1, "passed": 7, "deselected": 3, "errors": 2},
        ),
        ("= 12 passed, 1 error in 0.50s =", {"passed": 12, "errors": 1}),
        ("no tests ran in 0.01s", {}),
        ("", {}),
    ],
)
def test_parse_pytest_counts(output, counts):
    assert gpu_check.parse_pytest_counts(output) == counts


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_budget_allows_only_what_still_fits():
    clock = FakeClock()
    budget = gpu_check.Budget(480, clock)
    assert budget.allows(480) and not budget.allows(481)
    clock.now += 450
    assert budget.elapsed() == 450 and budget.left() == 30
    assert budget.allows(30) and not budget.allows(31)
    row = budget.skip_row("train", "dino", 40)
    assert row.status == "skipped" and "480 s budget" in row.detail and "450 s" in row.detail


def test_run_sections_reports_a_failure_and_skips_what_does_not_fit(capsys):
    clock = FakeClock()
    budget = gpu_check.Budget(100, clock)
    calls, saved = [], []

    def good(cfg, budget, device):
        calls.append("good")
        clock.now += 70
        return [gpu_check.Row("good", "case", device, seconds=1.5, result="fine")]

    def broken(cfg, budget, device):
        calls.append("broken")
        raise RuntimeError("CUDA error: boom")

    def late(cfg, budget, device):
        calls.append("late")
        return []

    sections = [("good", good, 10), ("broken", broken, 10), ("late", late, 40)]
    rows = gpu_check.run_sections(
        gpu_check.Config.quick(), budget, sections, "cuda", on_rows=lambda r: saved.append(len(r))
    )
    assert calls == ["good", "broken"]  # "late" needs 40 s, 30 s are left
    assert [r.status for r in rows] == ["ok", "error", "skipped"]
    assert "RuntimeError: CUDA error: boom" in rows[1].result
    assert "budget" in rows[2].detail
    assert saved == [1, 2, 3]  # the JSON is rewritten after every section


def test_table_and_json_on_made_up_results(tmp_path):
    rows = [
        gpu_check.Row("tests", "pytest -m gpu", "cuda", "ok", 42.0, "30 passed, 2 skipped"),
        gpu_check.Row("knn", "engine 10k x 60k x 64, k=10", "cuda:0", seconds=0.0123, result="r"),
        gpu_check.Row(
            "accuracy", "PML", "faiss cpu", "failed", 3.0, "P@1 0.9", detail="differ\nmore"
        ),
        gpu_check.Row("train", "vae", status="skipped", detail="would exceed the budget"),
        gpu_check.Row("index", "(whole section)", "cuda", "error", result="ValueError: bad"),
    ]
    table = gpu_check.format_report(rows).splitlines()
    assert table[0].split() == gpu_check.HEADERS and len(table) == 2 + len(rows)
    assert "0.012" in table[3] and "30 passed, 2 skipped" in table[2]
    assert "P@1 0.9 -- differ" in table[4] and "more" not in table[4]
    assert "would exceed the budget" in table[5] and "ValueError: bad" in table[6]
    # Text columns start at the same place on every line.
    assert len({line.index(row.case) for line, row in zip(table[2:], rows)}) == 1
    budget = gpu_check.Budget(480, FakeClock())
    cfg = gpu_check.Config.full()
    path = gpu_check.write_json(
        "gpu_check", gpu_check.payload(rows, {"gpu": "fake"}, cfg, budget), tmp_path
    )
    data = json.loads(path.read_text())
    assert data["benchmark"] == "gpu_check" and data["config"]["ks"] == [10, 6000]
    assert [r["status"] for r in data["results"]] == ["ok", "ok", "failed", "skipped", "error"]
    assert list(tmp_path.iterdir()) == [path]  # written atomically: no temporary left


def test_measuring_sections_run_on_the_cpu_at_toy_sizes(one_thread):
    cfg = dataclasses.replace(
        gpu_check.Config.quick(),
        n_query=60,
        n_ref=300,
        dim=8,
        ks=(3, 40),
        train_images=96,
        train_steps=1,
        methods=("simclr",),
        train_batch_size=16,
    )
    sections = [s for s in gpu_check.SECTIONS if s[0] in ("knn", "accuracy", "index", "train")]
    rows = gpu_check.run_sections(cfg, gpu_check.Budget(600), sections, device="cpu")
    assert [(r.section, r.status) for r in rows] == [
        ("knn", "ok"),
        ("knn", "ok"),
        ("accuracy", "ok"),
        ("accuracy", "ok"),
        ("index", "ok"),
        ("train", "ok"),
    ], [r.detail for r in rows]
    assert rows[3].data["max_abs_diff"] < 1e-4
    assert rows[5].data["images_per_second"] > 0 and rows[5].data["augment_seconds"] > 0

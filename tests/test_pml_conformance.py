"""benchmarks/pml_conformance.py's own bookkeeping: static scans, counting, aliasing, merging."""

import json
import subprocess
import sys
import textwrap

import pytest

from benchmarks import pml_conformance as pc

UNITTEST_FILE = textwrap.dedent(
    """
    import unittest
    import torch

    class TestA(unittest.TestCase):
        def test_one(self): pass
        def test_two(self): pass
        def helper(self): pass

    class Helper:
        def test_not_collected(self): pass

    class Other(unittest.TestCase):
        def test_three(self): pass

    def test_function(): pass
    """
)


def test_count_tests_counts_test_methods_of_test_classes_and_functions():
    assert pc.count_tests(UNITTEST_FILE) == 4


def test_needs_torchvision_finds_top_level_and_nested_imports_only():
    assert not pc.needs_torchvision(UNITTEST_FILE)
    assert pc.needs_torchvision("import torchvision.transforms\n")
    assert pc.needs_torchvision("def f():\n    from torchvision import datasets\n")
    assert not pc.needs_torchvision("import torchvision_like\nfrom .torchvision import x\n")


def test_area_of():
    assert pc.area_of("tests/losses/test_x.py::T::test_y") == "losses"
    assert pc.area_of("tests/utils/test_x.py") == "utils"
    assert pc.area_of("tests/zzz_testing_utils/testing_utils.py") is None
    assert pc.area_of("other/losses/test_x.py::t") is None


def test_one_line_prefers_the_first_pytest_error_line_and_shortens():
    text = "def f():\n>   assert x\nE   AssertionError: boom\nE   more\n\nfile.py:3: AssertionError"
    assert pc.one_line(text) == "AssertionError: boom"
    assert pc.one_line("a\n\nlast line\n") == "last line"
    assert len(pc.one_line("x" * 1000)) == pc.REASON_CHARS


def test_summarize_counts_each_test_once_by_its_worst_phase(tmp_path):
    (tmp_path / "tests" / "losses").mkdir(parents=True)
    (tmp_path / "tests" / "losses" / "test_broken.py").write_text(UNITTEST_FILE)
    t = "tests/losses/test_a.py::T::"
    records = [
        {"nodeid": t + "ok", "when": "setup", "outcome": "passed"},
        {"nodeid": t + "ok", "when": "call", "outcome": "passed"},
        {"nodeid": t + "ok", "when": "teardown", "outcome": "passed"},
        {"nodeid": t + "bad", "when": "call", "outcome": "failed", "reason": "AssertionError"},
        {"nodeid": t + "setup_err", "when": "setup", "outcome": "failed", "reason": "boom"},
        # A failed teardown after a passed call is an error, not a pass.
        {"nodeid": t + "td", "when": "call", "outcome": "passed"},
        {"nodeid": t + "td", "when": "teardown", "outcome": "failed", "reason": "td"},
        {"nodeid": t + "skip", "when": "setup", "outcome": "skipped", "reason": "no cuda"},
        # A file that failed to import: one error per test in it.
        {"nodeid": "tests/losses/test_broken.py", "when": "collect", "outcome": "failed"},
        {"nodeid": "tests/distances/test_d.py::T::x", "when": "call", "outcome": "passed"},
        {"nodeid": "tests/zzz_testing_utils/x.py::y", "when": "call", "outcome": "failed"},
    ]
    areas = pc.summarize(records, tmp_path / "tests")
    assert set(areas) == {"losses", "distances"}
    losses = areas["losses"]
    assert (losses["passed"], losses["failed"], losses["errors"], losses["skipped"]) == (1, 1, 6, 1)
    assert {f["id"]: f["outcome"] for f in losses["failures"]} == {
        t + "bad": "failed",
        t + "setup_err": "errors",
        t + "td": "errors",
        "tests/losses/test_broken.py": "errors",
    }
    assert areas["distances"]["passed"] == 1
    assert pc.totals(areas)["passed"] == 2
    table = pc.format_table(areas)
    assert table.splitlines()[0].split() == [
        "area",
        "passed",
        "failed",
        "errors",
        "skipped",
        "torchvision",
    ]
    assert table.splitlines()[-1].split() == ["total", "2", "1", "6", "1", "0"]


def test_merge_result_keeps_other_areas_only_under_the_same_settings(tmp_path):
    out = tmp_path / "r.json"
    settings = {"against": "metricssl", "k": None}
    first = pc.merge_result(out, settings, "src", {"losses": {**pc.empty_area(), "passed": 3}}, {})
    out.write_text(json.dumps(first))
    second = pc.merge_result(
        out, settings, "src", {"distances": {**pc.empty_area(), "passed": 2}}, {}
    )
    assert list(second["areas"]) == ["distances", "losses"]  # in AREAS order
    assert second["total"]["passed"] == 5
    other = pc.merge_result(out, {**settings, "k": "x"}, "src", {"distances": pc.empty_area()}, {})
    assert list(other["areas"]) == ["distances"]


def test_our_name_rejects_other_packages():
    assert pc.our_name("pytorch_metric_learning.losses.x") == "metricssl.losses.x"
    assert pc.our_name("pytorch_metric_learning") == "metricssl"
    with pytest.raises(ValueError, match="pml_name"):
        pc.our_name("pytorch_metric_learning_x")


def test_pml_module_names_lists_packages_and_modules(tmp_path):
    pkg = tmp_path / "pytorch_metric_learning"
    (pkg / "losses" / "__pycache__").mkdir(parents=True)
    for rel in ("__init__.py", "losses/__init__.py", "losses/a.py", "losses/__pycache__/a.py"):
        (pkg / rel).write_text("")
    assert pc.pml_module_names(pkg) == [
        "pytorch_metric_learning",
        "pytorch_metric_learning.losses",
        "pytorch_metric_learning.losses.a",
    ]


def test_install_aliases_makes_pml_names_the_same_objects_as_ours():
    # In a fresh interpreter: the hook changes sys.modules for the rest of the process.
    code = textwrap.dedent(
        """
        import json, sys
        sys.path.insert(0, sys.argv[1])
        from benchmarks import pml_conformance as pc
        sources = pc.install_aliases()
        import metricssl.losses, metricssl.utils.common_functions
        from pytorch_metric_learning import losses
        from pytorch_metric_learning.utils import common_functions as c_f
        print(json.dumps({
            "losses": losses is metricssl.losses,
            "c_f": c_f is metricssl.utils.common_functions,
            "source": sources["pytorch_metric_learning.losses"],
        }))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(pc.REPO_ROOT)], capture_output=True, text=True, check=True
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"losses": True, "c_f": True, "source": "metricssl.losses"}

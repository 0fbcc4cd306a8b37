"""PML's own unit tests, run unchanged with metricssl in place of pytorch_metric_learning.

The tests are exported from the stored snapshot of PML's repository (``git archive HEAD tests``
of ``--pml-git``) into a temporary directory, or copied from ``--pml-tests DIR`` (a checkout of
PML's ``tests`` folder); nothing is written into this repository except the JSON result.

Next to the exported ``tests/`` a ``conftest.py`` loads this file and, before pytest collects
anything, puts an import hook first on ``sys.meta_path``: every ``pytorch_metric_learning[.x.y]``
import resolves to the module object ``metricssl[.x.y]`` where metricssl has that module, and
to the real PML file (loaded under the PML name, so its relative imports come back to
metricssl) only where it has none yet. Every PML module is imported once that way up front;
where each name came from is in the JSON under ``aliases``. PML's test helpers
(``tests/zzz_testing_utils``, ``tests/losses/utils.py``) are PML's test code and stay as they are.

Settings are those of PML's CI (``.github/workflows/base_test_workflow.yml``):
``TEST_DEVICE=cpu``, ``TEST_DTYPES=float32,float64`` (PML runs float16 only on CUDA),
``WITH_COLLECT_STATS=false`` (``--collect-stats`` for true).

Test files that import torchvision are not run (metricssl does not depend on it) and are
counted per area as ``skipped_torchvision`` (their test methods, counted from the source).
A file that fails to import counts each of its test methods as an error.

Each area runs in its own pytest process. The result: one table per run on stdout, and
``benchmarks/results/pml_conformance.json`` (``--out``), merged with the areas already there
when the settings match, so areas can be run one at a time.

Usage::

    python benchmarks/pml_conformance.py                       # every area, one after another
    python benchmarks/pml_conformance.py --area distances --area samplers
    python benchmarks/pml_conformance.py --area losses -k TripletMargin --jobs 2
    python benchmarks/pml_conformance.py --against pml         # the reference: real PML
"""

from __future__ import annotations

import argparse
import ast
import datetime as _dt
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

PML = "pytorch_metric_learning"
OURS = "metricssl"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PML_GIT = Path("/work/.mirror/KevinMusgrave+pytorch-metric-learning/repo")
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "pml_conformance.json"
AREAS = (
    "distances",
    "losses",
    "miners",
    "reducers",
    "regularizers",
    "samplers",
    "utils",
    "testers",
    "trainers",
    "datasets",
)
COUNTS = ("passed", "failed", "errors", "skipped", "skipped_torchvision")
# PML's CI settings (base_test_workflow.yml); float16 is only exercised there on CUDA.
TEST_ENV = {"TEST_DEVICE": "cpu", "TEST_DTYPES": "float32,float64"}
REASON_CHARS = 300


# --------------------------------------------------------------------------- import aliasing


def _pml_dir() -> Path:
    """The installed PML package folder, found without importing it."""
    spec = importlib.machinery.PathFinder.find_spec(PML)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"{PML} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def pml_module_names(pml_dir: Path) -> list[str]:
    """Every module of the installed PML package, by dotted name, from its files."""
    names = []
    for path in sorted(pml_dir.rglob("*.py")):
        parts = path.relative_to(pml_dir).with_suffix("").parts
        if "__pycache__" in parts:
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join((PML, *parts)))
    return names


def our_name(pml_name: str, target: str = OURS) -> str:
    """``pytorch_metric_learning.a.b`` -> ``metricssl.a.b``."""
    if pml_name != PML and not pml_name.startswith(PML + "."):
        raise ValueError(f"pml_name must be {PML} or one of its submodules, got {pml_name!r}")
    return target + pml_name[len(PML) :]


class AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolve ``pytorch_metric_learning.*`` to ``target.*``, else to PML's own file.

    The loader hands back the already imported ``target`` module itself (``create_module``),
    so a class is one object under both names and ``isinstance`` checks in the tests hold.
    """

    def __init__(self, target: str, pml_dir: Path):
        self.target = target
        self.pml_dir = pml_dir
        self.sources: dict[str, str] = {}

    def _ours_exists(self, fullname: str) -> bool:
        try:
            return importlib.util.find_spec(our_name(fullname, self.target)) is not None
        except ModuleNotFoundError:  # a parent package of ours is missing
            return False

    def _pml_file(self, fullname: str) -> tuple[Path, bool] | None:
        base = self.pml_dir.joinpath(*fullname.split(".")[1:])
        if (base / "__init__.py").is_file():
            return base / "__init__.py", True
        if base.with_suffix(".py").is_file():
            return base.with_suffix(".py"), False
        return None

    def find_spec(self, fullname, path=None, target=None):
        if fullname != PML and not fullname.startswith(PML + "."):
            return None
        if self._ours_exists(fullname):
            self.sources[fullname] = our_name(fullname, self.target)
            return importlib.util.spec_from_loader(fullname, self)
        found = self._pml_file(fullname)
        if found is None:
            return None
        file, is_package = found
        self.sources[fullname] = f"{PML} (real PML: {file})"
        locations = [str(file.parent)] if is_package else None
        return importlib.util.spec_from_file_location(
            fullname, file, submodule_search_locations=locations
        )

    def create_module(self, spec):
        # An existing module object: the import system keeps its __name__, __spec__, __path__.
        return importlib.import_module(our_name(spec.name, self.target))

    def exec_module(self, module):
        pass  # already executed under its own name


def install_aliases(target: str = OURS) -> dict[str, str]:
    """Install the hook and import every PML module through it; returns name -> source.

    The source is the metricssl module name, ``pytorch_metric_learning (real PML: file)``,
    or ``error: ...`` where importing failed.
    """
    pml_dir = _pml_dir()
    finder = AliasFinder(target, pml_dir)
    sys.meta_path.insert(0, finder)
    report = {}
    for name in pml_module_names(pml_dir):
        try:
            importlib.import_module(name)
            report[name] = finder.sources.get(name, "already imported")
        except Exception as exc:  # recorded: the tests that import it will show the error
            report[name] = f"error: {type(exc).__name__}: {exc}"
    return report


# ------------------------------------------------------------------ recording in the subprocess


def one_line(text: str) -> str:
    """The last informative line of a failure text, shortened to REASON_CHARS."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("E ")]
    line = (errors[0][1:].strip() if errors else lines[-1]) if lines else ""
    return line if len(line) <= REASON_CHARS else line[: REASON_CHARS - 3] + "..."


def _reason(report) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None and getattr(crash, "message", None):
        return one_line(crash.message.splitlines()[0] if crash.message.strip() else crash.message)
    if isinstance(report.longrepr, tuple):  # skips: (file, line, reason)
        return one_line(report.longrepr[-1])
    return one_line(str(report.longrepr))


class Recorder:
    """pytest plugin: one JSON line per test phase outcome and per failed collection."""

    def __init__(self, path: str):
        self.path = path
        self.worker = False

    def pytest_configure(self, config):
        self.worker = hasattr(config, "workerinput")  # xdist: the controller writes

    def _write(self, record: dict) -> None:
        if self.worker:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def pytest_runtest_logreport(self, report):
        reason = _reason(report) if report.outcome != "passed" else ""
        self._write(
            {
                "nodeid": report.nodeid,
                "when": report.when,
                "outcome": report.outcome,
                "reason": reason,
            }
        )

    def pytest_collectreport(self, report):
        if report.outcome == "failed":
            self._write(
                {
                    "nodeid": report.nodeid,
                    "when": "collect",
                    "outcome": "failed",
                    "reason": _reason(report),
                }
            )


CONFTEST = """\
# Written by metricssl's benchmarks/pml_conformance.py; loads that file and installs its hooks.
import importlib.util
import json
import sys

_spec = importlib.util.spec_from_file_location("_pml_conformance", {script!r})
_mod = importlib.util.module_from_spec(_spec)
sys.modules["_pml_conformance"] = _mod
_spec.loader.exec_module(_mod)
if {target!r} != "pytorch_metric_learning":
    _sources = _mod.install_aliases({target!r})
    with open({aliases!r}, "w") as _f:
        json.dump(_sources, _f)


def pytest_configure(config):
    config.pluginmanager.register(_mod.Recorder({records!r}), "pml_conformance_recorder")
"""


# ----------------------------------------------------------------------- static test analysis


def needs_torchvision(source: str) -> bool:
    """Whether a test file imports torchvision anywhere (top level or inside a function)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            if any(a.name.split(".")[0] == "torchvision" for a in node.names):
                return True
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and (node.module or "").split(".")[0] == "torchvision":
                return True
    return False


def count_tests(source: str) -> int:
    """Test functions pytest would collect from a unittest-style file (``test*`` in classes
    named ``Test*`` or deriving from a ``*TestCase``, and top-level ``test*`` functions)."""
    count = 0
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            count += node.name.startswith("test")
        elif isinstance(node, ast.ClassDef):
            bases = [ast.unparse(b).split(".")[-1] for b in node.bases]
            if node.name.startswith("Test") or any(b.endswith("TestCase") for b in bases):
                count += sum(
                    isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
                    and item.name.startswith("test")
                    for item in node.body
                )
    return count


def area_of(nodeid: str) -> str | None:
    """``tests/losses/test_x.py::T::test_y`` -> ``losses``; None outside the areas."""
    parts = nodeid.replace("\\", "/").split("::")[0].split("/")
    if len(parts) >= 2 and parts[0] == "tests" and parts[1] in AREAS:
        return parts[1]
    return None


def torchvision_files(tests_dir: Path, area: str) -> dict[str, int]:
    """Test files of an area that import torchvision -> their number of tests."""
    found = {}
    for path in sorted((tests_dir / area).glob("test*.py")):
        source = path.read_text()
        if needs_torchvision(source):
            found[f"tests/{area}/{path.name}"] = max(1, count_tests(source))
    return found


# ----------------------------------------------------------------------------- bookkeeping


def summarize(records: list[dict], tests_dir: Path | None = None) -> dict[str, dict]:
    """Per-area counts and failures from the recorded phases.

    A test counts once: an error if its setup or teardown failed, failed if its call failed,
    skipped if any phase skipped, passed if its call passed. A file that failed to import
    counts one error per test in it (``tests_dir`` is read to count them; at least one).
    """
    per_test: dict[str, tuple[str, str]] = {}
    rank = {"passed": 0, "skipped": 1, "failed": 2, "errors": 3}
    for rec in records:
        nodeid, when, outcome = rec["nodeid"], rec["when"], rec["outcome"]
        if when == "collect":
            kind = "errors"
        elif outcome == "failed":
            kind = "failed" if when == "call" else "errors"
        elif outcome == "skipped":
            kind = "skipped"
        elif when == "call":
            kind = "passed"
        else:
            continue  # a passed setup/teardown says nothing on its own
        old = per_test.get(nodeid)
        if old is None or rank[kind] > rank[old[0]]:
            per_test[nodeid] = (kind, rec.get("reason", ""))

    areas: dict[str, dict] = {}
    for nodeid, (kind, reason) in sorted(per_test.items()):
        area = area_of(nodeid)
        if area is None:
            continue
        entry = areas.setdefault(area, empty_area())
        weight = 1
        if "::" not in nodeid and tests_dir is not None:  # a whole file failed to import
            path = tests_dir.parent / nodeid
            weight = max(1, count_tests(path.read_text())) if path.is_file() else 1
        entry[kind] += weight
        if kind in ("failed", "errors"):
            entry["failures"].append({"id": nodeid, "outcome": kind, "reason": reason})
    return areas


def empty_area() -> dict:
    return {**{c: 0 for c in COUNTS}, "timed_out": False, "failures": []}


def totals(areas: dict[str, dict]) -> dict[str, int]:
    return {c: sum(a[c] for a in areas.values()) for c in COUNTS}


def format_table(areas: dict[str, dict]) -> str:
    header = ("area", "passed", "failed", "errors", "skipped", "torchvision")
    rows = [header]
    for name in [a for a in AREAS if a in areas]:
        a = areas[name]
        rows.append((name + (" (timed out)" if a["timed_out"] else ""), *map(str, _nums(a))))
    if areas:
        rows.append(("total", *map(str, _nums(totals(areas)))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _nums(a: dict) -> tuple[int, ...]:
    return tuple(a[c] for c in COUNTS)


# ---------------------------------------------------------------------------------- running


def export_tests(dest: Path, pml_git: Path | None, pml_tests: Path | None) -> str:
    """Put PML's tests at ``dest/tests``; returns a description of where they came from."""
    if pml_tests is not None:
        if not (pml_tests / "__init__.py").is_file():
            raise ValueError(
                f"--pml-tests must be PML's tests folder (with __init__.py): {pml_tests}"
            )
        shutil.copytree(pml_tests, dest / "tests", ignore=shutil.ignore_patterns("__pycache__"))
        return str(pml_tests)
    if pml_git is None or not pml_git.exists():
        raise ValueError(f"--pml-git: no git directory at {pml_git}")
    git = ["git", f"--git-dir={pml_git}"]
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    archive = subprocess.run([*git, "archive", "HEAD", "tests"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return f"{pml_git} @ {commit.stdout.strip()}"


def run_area(
    root: Path,
    area: str,
    *,
    target: str,
    keyword: str | None,
    jobs: int,
    timeout: float | None,
    collect_stats: bool,
) -> tuple[dict, dict[str, str]]:
    """Run one area's tests in a fresh pytest process; returns (area entry, alias sources)."""
    records_path = root / f"records_{area}.jsonl"
    aliases_path = root / f"aliases_{area}.json"
    records_path.write_text("")
    (root / "conftest.py").write_text(
        CONFTEST.format(
            script=str(Path(__file__).resolve()),
            target=target,
            aliases=str(aliases_path),
            records=str(records_path),
        )
    )
    (root / "pytest.ini").write_text("[pytest]\n")
    skipped_tv = torchvision_files(root / "tests", area)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", "pytest.ini"]
    cmd += ["--rootdir", str(root), f"tests/{area}"]
    cmd += [f"--ignore={f}" for f in skipped_tv]
    if keyword:
        cmd += ["-k", keyword]
    if jobs > 1:
        cmd += ["-n", str(jobs)]
    env = {
        **os.environ,
        **TEST_ENV,
        "WITH_COLLECT_STATS": "true" if collect_stats else "false",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    log = root / f"pytest_{area}.log"
    timed_out = False
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: pytest and its xdist workers
            proc.wait()
            rc, timed_out = None, True
    records = [json.loads(line) for line in records_path.read_text().splitlines() if line]
    entry = summarize(records, root / "tests").get(area, empty_area())
    entry["skipped_torchvision"] = sum(skipped_tv.values())
    entry["torchvision_files"] = sorted(skipped_tv)
    entry["timed_out"] = timed_out
    if rc not in (0, 1, 5, None):  # 5: nothing collected (e.g. -k matched nothing)
        tail = log.read_text().splitlines()[-15:]
        entry["pytest_exit"] = {"code": rc, "tail": tail}
        print(f"[{area}] pytest exited {rc}:\n" + "\n".join(tail), file=sys.stderr)
    aliases = json.loads(aliases_path.read_text()) if aliases_path.exists() else {}
    return entry, aliases


def _settings(args) -> dict:
    return {
        "against": args.against,
        **TEST_ENV,
        "WITH_COLLECT_STATS": args.collect_stats,
        "k": args.k,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--area", action="append", choices=AREAS, help="repeatable; default all")
    parser.add_argument("-k", help="pytest -k expression")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per area")
    parser.add_argument("--jobs", type=int, default=1, help="pytest-xdist workers (-n)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON result file")
    parser.add_argument("--pml-git", type=Path, default=DEFAULT_PML_GIT)
    parser.add_argument("--pml-tests", type=Path, help="a checkout of PML's tests folder")
    parser.add_argument(
        "--against",
        choices=(OURS, PML),
        default=OURS,
        help=f"{PML}: run the same tests on the real PML (the reference)",
    )
    parser.add_argument("--collect-stats", action="store_true", help="WITH_COLLECT_STATS=true")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.timeout is not None and args.timeout <= 0:
        parser.error(f"--timeout must be > 0, got {args.timeout}")

    areas: dict[str, dict] = {}
    aliases: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="pml_conformance_") as tmp:
        root = Path(tmp)
        source = export_tests(root, args.pml_git, args.pml_tests)
        for area in args.area or AREAS:
            areas[area], found = run_area(
                root,
                area,
                target=args.against,
                keyword=args.k,
                jobs=args.jobs,
                timeout=args.timeout,
                collect_stats=args.collect_stats,
            )
            aliases.update(found)
            print(f"[{area}] " + ", ".join(f"{c} {areas[area][c]}" for c in COUNTS), flush=True)

    print()
    print(format_table(areas))
    for entry in areas.values():
        for fail in entry["failures"]:
            print(f"  {fail['outcome']}: {fail['id']}\n      {fail['reason']}")
    fallbacks = sorted(n for n, s in aliases.items() if not s.startswith(OURS))
    if args.against == OURS and fallbacks:
        print(f"\nnot in metricssl (real PML used, or import failed): {len(fallbacks)}")
        for name in fallbacks:
            print(f"  {name}: {aliases[name]}")

    payload = merge_result(args.out, _settings(args), source, areas, aliases)
    path = _write_json(args.out, payload)
    print(f"\nwrote {path}")
    return payload


def merge_result(
    out: Path, settings: dict, source: str, areas: dict, aliases: dict[str, str]
) -> dict:
    """The new areas over those already in ``out`` when ``out`` was written with the same
    settings (so areas can be run one at a time); otherwise only the new areas."""
    merged_areas, merged_aliases = {}, {}
    if out.is_file():
        try:
            old = json.loads(out.read_text())
        except json.JSONDecodeError:
            old = {}
        if old.get("settings") == settings:
            merged_areas = old.get("areas", {})
            merged_aliases = old.get("aliases", {})
    merged_areas.update(areas)
    merged_aliases.update(aliases)
    ordered = {a: merged_areas[a] for a in AREAS if a in merged_areas}
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": settings,
        "pml_tests": source,
        "total": totals(ordered),
        "areas": ordered,
        "aliases": merged_aliases,
        "not_in_metricssl": sorted(n for n, s in merged_aliases.items() if not s.startswith(OURS)),
    }


def _write_json(out: Path, payload: dict) -> Path:
    if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
        sys.path.insert(0, str(REPO_ROOT))
    from benchmarks._harness import write_json

    return write_json(out.stem, payload, results_dir=out.parent)


if __name__ == "__main__":
    main()

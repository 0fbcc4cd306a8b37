"""The one prepared GPU run: the gpu-marked tests and the GPU timings, in under 8 minutes.

Run it once whenever a CUDA machine is available::

    python benchmarks/gpu_check.py            # writes benchmarks/results/gpu_check.json
    python benchmarks/gpu_check.py --quick    # smaller sizes (results/gpu_check_quick.json)

Sections, in order (each one's failure is reported in its row and the rest still run; a
section that would overrun the time budget is skipped, and its row says so):

1. ``tests``: ``python -m pytest -q -m gpu`` in a subprocess (with a timeout): the pass, fail
   and skip counts;
2. ``knn``: the exact k-NN engine (:func:`metricssl.eval.knn.knn`) on CUDA tensors, 10k
   queries x 60k references x 64 dims, k=10 and k=6000;
3. ``sync audit``: where that search makes the host wait for the GPU
   (``torch.cuda.set_sync_debug_mode("warn")``; source lines in the JSON);
4. ``accuracy``: ``AccuracyCalculator(k="max_bin_count")``, 10k queries against 60k
   references (64-d normalised embeddings: 10 class centres + noise), ours on CUDA against
   PML's (whose FAISS search runs on the CPU unless FAISS has GPU support: each row says
   where it ran), with the largest difference between the two libraries' metrics;
5. ``index``: :class:`metricssl.index.EmbeddingIndex` exact (``"flat"``) search with CUDA
   queries, and how many of its neighbours equal the engine's;
6. ``train``: two short epochs of :class:`metricssl.ssl.Trainer` per SSL method with AMP on
   CUDA (synthetic uint8 32x32 RGB images, no download); the second epoch gives images/s
   (training steps only, from the trainer's ``images_per_second``) and the augmentation
   share: the median time of one ``make_views`` call on a batch, bracketed by
   ``torch.cuda.synchronize``, divided by the epoch's mean step time.

Timings: a warm-up call, then the median of ``--repeats`` calls, each bracketed by
``torch.cuda.synchronize``. One table is printed at the end (progress goes to stderr) and the
JSON (machine, configuration, every row) is written atomically after each section, so an
interrupted run keeps what it measured.

Exit codes: 0 when every row is ``ok`` or ``skipped``, 1 when a row ``failed`` (a check did
not hold) or is an ``error`` (raised); without CUDA the script prints one line and exits with
code 2, running nothing.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import REPO_ROOT, RESULTS_DIR, format_table, machine_info, write_json

NO_CUDA_EXIT = 2
NO_CUDA_MESSAGE = (
    "gpu_check: no CUDA device is visible (torch.cuda.is_available() is False); nothing was run"
)
# 7.5 minutes for the sections: the interpreter's start and a section that overruns its
# estimate stay within the 8 minutes a lent GPU gives this run.
BUDGET_S = 450
# The gpu-marked tests get at most this, and never the last minute of the budget.
TESTS_TIMEOUT_S = 180
HEADERS = ["section", "case", "device", "status", "seconds", "result"]


@dataclass
class Row:
    """One line of the table (and one entry of the JSON's ``results``)."""

    section: str
    case: str
    device: str = ""
    status: str = "ok"  # ok, failed (a check did not hold), error (raised), skipped
    seconds: float | None = None  # the timed quantity (median), when there is one
    result: str = ""  # the figure or counts, as shown in the table
    detail: str = ""  # why it failed or was skipped
    data: dict = field(default_factory=dict)  # machine-readable extras for the JSON


@dataclass(frozen=True)
class Config:
    """Sizes of one run (``full`` or ``quick``)."""

    n_query: int
    n_ref: int
    dim: int
    ks: tuple[int, ...]
    repeats: int
    train_images: int
    train_steps: int
    tests_timeout_s: float
    methods: tuple[str, ...] | None = None  # None: every registered method
    train_batch_size: int | None = None  # None: each method's default

    @classmethod
    def full(cls) -> Config:
        return cls(10_000, 60_000, 64, (10, 6000), 3, 6144, 20, TESTS_TIMEOUT_S)

    @classmethod
    def quick(cls) -> Config:
        return cls(2_000, 10_000, 64, (10, 1000), 1, 1024, 3, 90)


class Budget:
    """The run's wall-clock budget: a section runs only if its estimate still fits."""

    def __init__(self, total_s: float, clock: Callable[[], float] = time.monotonic):
        self.total_s = float(total_s)
        self._clock = clock
        self._start = clock()

    def elapsed(self) -> float:
        return self._clock() - self._start

    def left(self) -> float:
        return self.total_s - self.elapsed()

    def allows(self, estimate_s: float) -> bool:
        return estimate_s <= self.left()

    def skip_row(self, section: str, case: str, estimate_s: float) -> Row:
        return Row(
            section,
            case,
            status="skipped",
            detail=(
                f"would exceed the {self.total_s:.0f} s budget "
                f"({self.elapsed():.0f} s used, ~{estimate_s:.0f} s needed)"
            ),
        )


# -- timing helpers -----------------------------------------------------------------------------


def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device, repeats: int, warmup: int = 1):
    """(median seconds, every time, the last result): ``warmup`` untimed calls, then
    ``repeats`` timed ones, each bracketed by a device synchronisation."""
    out = None
    for _ in range(warmup):
        out = fn()
    _sync(device)
    times = []
    for _ in range(max(1, repeats)):
        del out
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


def _count(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def _sizes(cfg: Config) -> str:
    return f"{_count(cfg.n_query)} x {_count(cfg.n_ref)} x {cfg.dim}"


def class_embeddings(n: int, dim: int, classes: int, seed: int, device):
    """L2-normalised embeddings: ``classes`` random centres + Gaussian noise; and labels."""
    import torch

    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(classes, dim, generator=g), dim=1)
    labels = torch.randint(0, classes, (n,), generator=g)
    x = centres[labels] + 0.6 * torch.randn(n, dim, generator=g) / dim**0.5
    return torch.nn.functional.normalize(x, dim=1).to(device), labels.to(device)


# -- sections ------------------------------------------------------------------------------------

_SUMMARY_WORDS = ("passed", "failed", "skipped", "deselected", "error", "errors", "xfailed")


def parse_pytest_counts(output: str) -> dict[str, int]:
    """The counts of pytest's final summary line (``3 passed, 1 skipped in 2.1s``)."""
    lines = [ln for ln in output.strip().splitlines() if re.search(r"\bin [\d.]+s", ln)]
    counts: dict[str, int] = {}
    for number, word in re.findall(r"(\d+) (\w+)", lines[-1] if lines else ""):
        if word in _SUMMARY_WORDS:
            key = "errors" if word == "error" else word
            counts[key] = counts.get(key, 0) + int(number)
    return counts


def section_tests(cfg: Config, budget: Budget, device: str = "cuda") -> list[Row]:
    timeout = min(cfg.tests_timeout_s, budget.left() - 60)
    if timeout < 30:
        return [budget.skip_row("tests", "pytest -m gpu", cfg.tests_timeout_s)]
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        return [
            Row(
                "tests",
                "pytest -m gpu",
                device,
                "failed",
                time.perf_counter() - t0,
                f"timed out after {timeout:.0f} s",
                detail=out[-2000:],
            )
        ]
    counts = parse_pytest_counts(proc.stdout)
    bad = counts.get("failed", 0) + counts.get("errors", 0)
    ok = proc.returncode == 0 and not bad and counts.get("passed", 0) > 0
    failures = [ln for ln in proc.stdout.splitlines() if ln.startswith(("FAILED", "ERROR"))]
    return [
        Row(
            "tests",
            "pytest -m gpu",
            device,
            "ok" if ok else "failed",
            time.perf_counter() - t0,
            ", ".join(f"{n} {w}" for w, n in counts.items()) or f"exit code {proc.returncode}",
            detail="\n".join(failures) if failures else ("" if ok else proc.stdout[-2000:]),
            data={"counts": counts, "returncode": proc.returncode},
        )
    ]


def section_knn(cfg: Config, budget: Budget, device: str = "cuda") -> list[Row]:
    import torch

    from metricssl.eval.knn import knn

    q, _ = class_embeddings(cfg.n_query, cfg.dim, 10, 1, device)
    r, _ = class_embeddings(cfg.n_ref, cfg.dim, 10, 2, device)
    rows = []
    for k in cfg.ks:
        case = f"engine {_sizes(cfg)}, k={k}"
        seconds, times, (distances, indices) = timed(
            lambda k=k: knn(q, r, k, progress=False), device, cfg.repeats
        )
        on = indices.device.type
        rows.append(
            Row(
                "knn",
                case,
                str(indices.device),
                "ok" if on == torch.device(device).type else "failed",
                seconds,
                f"{cfg.n_query / seconds:,.0f} queries/s",
                data={"times_s": times, "k": k},
            )
        )
    return rows


def section_sync_audit(cfg: Config, budget: Budget, device: str = "cuda") -> list[Row]:
    """Where one engine search waits for the device: distinct source lines and counts."""
    import torch

    from metricssl.eval.knn import knn

    q, _ = class_embeddings(cfg.n_query, cfg.dim, 10, 1, device)
    r, _ = class_embeddings(cfg.n_ref, cfg.dim, 10, 2, device)
    knn(q, r, 10, progress=False)  # warm-up outside the audit
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            knn(q, r, 10, progress=False)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    places: dict[str, int] = {}
    for w in caught:
        if "synchroniz" in str(w.message).lower():
            where = f"{_relative(w.filename)}:{w.lineno}"
            places[where] = places.get(where, 0) + 1
    summary = ", ".join(f"{p} x{n}" for p, n in sorted(places.items(), key=lambda x: -x[1]))
    return [
        Row(
            "sync audit",
            f"engine {_sizes(cfg)}, k=10",
            device,
            result=f"{sum(places.values())} host syncs" + (f": {summary}" if summary else ""),
            data={"sync_sites": places},
        )
    ]


def _relative(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return path


def section_accuracy(cfg: Config, budget: Budget, device: str = "cuda") -> list[Row]:
    import logging

    import torch
    from pytorch_metric_learning.utils.accuracy_calculator import (
        AccuracyCalculator as PMLAccuracyCalculator,
    )

    from metricssl.eval.accuracy_calculator import AccuracyCalculator

    logging.getLogger("PML").setLevel(logging.ERROR)
    q, ql = class_embeddings(cfg.n_query, cfg.dim, 10, 3, device)
    r, rl = class_embeddings(cfg.n_ref, cfg.dim, 10, 4, device)
    include = ("precision_at_1", "r_precision", "mean_average_precision_at_r")
    ours_calc = AccuracyCalculator(include=include, k="max_bin_count", progress=False)
    pml_calc = PMLAccuracyCalculator(
        include=include, k="max_bin_count", device=torch.device(device)
    )
    case = f"max_bin_count, {_sizes(cfg)}"
    ours_s, ours_times, ours = timed(
        lambda: ours_calc.get_accuracy(q, ql, r, rl), device, cfg.repeats
    )
    rows = [
        Row(
            "accuracy",
            f"ours {case}",
            device,
            seconds=ours_s,
            result=_metrics_text(ours),
            data={"times_s": ours_times, "metrics": ours},
        )
    ]
    if not budget.allows(max(30.0, 3 * ours_s)):
        rows.append(budget.skip_row("accuracy", f"PML {case}", max(30.0, 3 * ours_s)))
        return rows
    pml_s, pml_times, theirs = timed(
        lambda: pml_calc.get_accuracy(q, ql, r, rl), device, max(1, cfg.repeats - 1)
    )
    diff = max(abs(float(ours[m]) - float(theirs[m])) for m in include)
    faiss_device = f"faiss {'gpu' if _faiss_gpus() else 'cpu'} search, metrics on {device}"
    rows.append(
        Row(
            "accuracy",
            f"PML {case}",
            faiss_device,
            seconds=pml_s,
            result=f"{_metrics_text(theirs)}; ours {pml_s / ours_s:.1f}x faster, max|diff| "
            f"{diff:.1e}",
            status="ok" if diff < 1e-4 else "failed",
            detail="" if diff < 1e-4 else "metrics differ from PML's by more than 1e-4",
            data={"times_s": pml_times, "metrics": theirs, "max_abs_diff": diff},
        )
    )
    return rows


def _faiss_gpus() -> int:
    try:
        import faiss

        return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0
    except ImportError:
        return 0


def _metrics_text(metrics: dict) -> str:
    short = {"precision_at_1": "P@1", "r_precision": "RP", "mean_average_precision_at_r": "MAP@R"}
    return " ".join(f"{short.get(k, k)} {float(v):.4f}" for k, v in metrics.items())


def section_index(cfg: Config, budget: Budget, device: str = "cuda") -> list[Row]:
    from metricssl.eval.knn import knn
    from metricssl.index.embedding_index import EmbeddingIndex

    q, _ = class_embeddings(cfg.n_query, cfg.dim, 10, 1, device)
    r, _ = class_embeddings(cfg.n_ref, cfg.dim, 10, 2, device)
    index = EmbeddingIndex(cfg.dim, kind="flat", progress=False)
    index.add(r)
    seconds, times, (distances, ids) = timed(lambda: index.search(q, 10), device, cfg.repeats)
    _, engine_ids = knn(q, r, 10, progress=False)
    same = float((ids == engine_ids).float().mean())
    return [
        Row(
            "index",
            f"EmbeddingIndex flat, {_sizes(cfg)}, k=10",
            str(ids.device),
            "ok" if same > 0.999 else "failed",
            seconds,
            f"{cfg.n_query / seconds:,.0f} queries/s; {100 * same:.2f}% ids as the engine's",
            detail="" if same > 0.999 else "the index's neighbours differ from the engine's",
            data={"times_s": times, "same_as_engine": same},
        )
    ]


def section_train(cfg: Config, budget: Budget, device: str = "cuda") -> list[Row]:
    import torch

    from metricssl.ssl.registry import METHODS

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (cfg.train_images, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.arange(cfg.train_images) % 10
    rows, durations = [], []
    for name in cfg.methods or tuple(METHODS):
        # The next method is expected to take as long as the slowest so far, plus slack.
        estimate = 1.5 * max(durations, default=10.0)
        if not budget.allows(estimate):
            rows.append(budget.skip_row("train", name, estimate))
            continue
        t0 = time.perf_counter()
        try:
            rows.append(_train_one(name, cfg, images, labels, device))
        except Exception as exc:  # noqa: BLE001 - one method's failure is a result
            rows.append(_error_row("train", name, device, exc))
        durations.append(time.perf_counter() - t0)
    return rows


def section_layout(cfg: Config, budget: Budget, device: str = "cuda") -> list[Row]:
    """SimCLR under AMP in both memory formats: does the Trainer's "auto" choice on CUDA
    (channels-last under AMP, unmeasured so far) pay?"""
    import torch

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (cfg.train_images, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.arange(cfg.train_images) % 10
    return [
        _train_one("simclr", cfg, images, labels, device, memory_format=layout, section="layout")
        for layout in ("channels_last", "contiguous")
    ]


def _train_one(
    name: str,
    cfg: Config,
    images,
    labels,
    device,
    memory_format: str = "auto",
    section: str = "train",
) -> Row:
    from metricssl.ssl.trainer import Trainer

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as out:
        trainer = Trainer(
            method=name,
            dataset=(images, labels),
            epochs=2,
            steps_per_epoch=cfg.train_steps,
            batch_size=cfg.train_batch_size,
            device=device,
            amp="auto",
            memory_format=memory_format,
            out=out,
            resume=False,
            progress=False,
            knn_every=2,
        )
        try:
            trainer.fit(epochs=1)  # kernels, allocator and one-off work (banks, clusters)
            row = trainer.fit()  # the measured epoch
            aug_s = _augment_seconds(trainer, cfg.repeats + 2)
        finally:
            trainer.close()
    step_s = row["epoch_seconds"] / trainer.steps_per_epoch
    amp = str(trainer.amp_dtype).replace("torch.", "") if trainer.amp_dtype else "off"
    layout = trainer.hyper["memory_format"]
    return Row(
        section,
        f"{name} (amp {amp}, {layout}, batch {trainer.batch_size})",
        device,
        seconds=step_s,
        result=f"{row['images_per_second']:,.0f} img/s, augmentation {100 * aug_s / step_s:.0f}%"
        f" of a step",
        data={
            "images_per_second": row["images_per_second"],
            "step_seconds": step_s,
            "augment_seconds": aug_s,
            "trainer_augment_share": row.get("augment_share"),
            "loss": row.get("loss"),
        },
    )


def _augment_seconds(trainer, repeats: int) -> float:
    """Median seconds of one ``make_views`` call on a training batch, on the trainer's
    device (synchronised before and after)."""
    import torch

    idx = torch.arange(min(trainer.batch_size, len(trainer.train_data)))
    images, _ = next(iter(trainer.train_data.batches(idx, trainer.batch_size)))
    images = images.to(trainer.device)
    with torch.no_grad():
        seconds, _, _ = timed(
            lambda: trainer.method.make_views(images, trainer.augment_generator),
            trainer.device,
            repeats,
        )
    return seconds


def _error_row(section: str, case: str, device: str, exc: BaseException) -> Row:
    tail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:])
    return Row(
        section,
        case,
        device,
        "error",
        result=f"{type(exc).__name__}: {exc}"[:200],
        detail=tail[-1500:],
    )


# (name, function, seconds it needs at full size; the tests take what they are given)
SECTIONS: tuple[tuple[str, Callable, float], ...] = (
    ("tests", section_tests, 0.0),
    ("knn", section_knn, 40.0),
    ("sync audit", section_sync_audit, 10.0),
    ("accuracy", section_accuracy, 60.0),
    ("index", section_index, 20.0),
    ("train", section_train, 30.0),
    ("layout", section_layout, 20.0),
)


def run_sections(
    cfg: Config,
    budget: Budget,
    sections: Sequence[tuple[str, Callable, float]] = SECTIONS,
    device: str = "cuda",
    on_rows: Callable[[list[Row]], None] | None = None,
) -> list[Row]:
    """Every section in turn; a section that raises gives an ``error`` row, one whose
    estimate no longer fits the budget a ``skipped`` row."""
    rows: list[Row] = []
    for name, fn, estimate in sections:
        if not budget.allows(estimate):
            rows.append(budget.skip_row(name, "(whole section)", estimate))
        else:
            print(f"[gpu_check] {name} ({budget.elapsed():.0f} s used)", file=sys.stderr)
            try:
                rows.extend(fn(cfg, budget, device))
            except Exception as exc:  # noqa: BLE001 - report it; the other sections still run
                rows.append(_error_row(name, "(whole section)", device, exc))
        if on_rows is not None:
            on_rows(rows)
    return rows


# -- reporting -----------------------------------------------------------------------------------


def table_rows(rows: Sequence[Row]) -> list[list[str]]:
    """The table's cells: a skipped or failed row shows why in place of (or after) a result."""
    cells = []
    for row in rows:
        result = row.result if row.status == "ok" else row.result or row.detail
        if row.status == "failed" and row.result and row.detail:
            result = f"{row.result} -- {row.detail.splitlines()[0]}"
        seconds = "" if row.seconds is None else f"{row.seconds:.3f}"
        cells.append([row.section, row.case, row.device, row.status, seconds, result])
    return cells


def format_report(rows: Sequence[Row]) -> str:
    """One plain-text table; text columns left-aligned, the seconds right-aligned."""
    cells = table_rows(rows)
    seconds = HEADERS.index("seconds")
    for col in range(len(HEADERS)):
        if col != seconds:  # format_table right-aligns all but the first column
            width = max([len(HEADERS[col])] + [len(r[col]) for r in cells])
            for r in cells:
                r[col] = r[col].ljust(width)
    return format_table(HEADERS, cells)


def payload(rows: Sequence[Row], machine: dict, cfg: Config, budget: Budget) -> dict:
    return {
        "benchmark": "gpu_check",
        "machine": machine,
        "config": asdict(cfg),
        "budget_s": budget.total_s,
        "elapsed_s": round(budget.elapsed(), 1),
        "results": [asdict(r) for r in rows],
    }


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes, one repeat")
    p.add_argument(
        "--out", default=None, help="write results/<OUT>.json (gpu_check or gpu_check_quick)"
    )
    return p.parse_args(argv)


def main(argv=None, results_dir: Path = RESULTS_DIR) -> int:
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print(NO_CUDA_MESSAGE)
        return NO_CUDA_EXIT
    cfg = Config.quick() if args.quick else Config.full()
    out_name = args.out or ("gpu_check_quick" if args.quick else "gpu_check")
    budget = Budget(BUDGET_S)
    machine = machine_info("cuda")
    machine.update(
        cuda=torch.version.cuda,
        faiss_gpus=_faiss_gpus(),
        tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
    )

    def save(rows):
        write_json(out_name, payload(rows, machine, cfg, budget), results_dir)

    rows = run_sections(cfg, budget, on_rows=save)
    save(rows)
    print(
        f"{machine.get('gpu')} / CUDA {machine['cuda']} / torch {machine['torch']}; "
        f"{budget.elapsed():.0f} s of {BUDGET_S} s"
    )
    print(format_report(rows))
    print(f"wrote {results_dir / (out_name + '.json')}")
    failed = [r for r in rows if r.status in ("failed", "error")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

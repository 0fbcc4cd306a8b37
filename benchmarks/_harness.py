"""Shared benchmark machinery: isolated measurements, tables and JSON results.

Every measurement runs in a fresh Python subprocess, so one case's memory high-water mark,
allocator caches or thread pools never leak into the next:

- the worker imports ``module:function`` (the *target*) and calls it with a JSON-able ``args``
  dict; the target builds its inputs and returns a :class:`Workload`;
- it runs the workload once as a warm-up, then times ``repeats`` more runs (fewer when one
  run is slow, so a case stays within its time limit) and reports the median;
- peak memory is ``ru_maxrss`` of that worker minus ``ru_maxrss`` of a *baseline* worker that
  does the same imports and builds the same inputs but never runs the workload (on CUDA the
  target supplies the device's own peak counter instead);
- outputs needed to compare implementations (a loss value, a gradient, mined indices) are
  written by the worker to an ``.npz`` file that the parent reads back.

A run that raises out-of-memory, is killed, or exceeds the time limit is reported with that
status instead of stopping the benchmark. The worker sets ``RLIMIT_AS`` to the memory limit
above what it already uses, so a runaway case fails with an allocation error rather than
pushing a shared machine into swap or the OOM killer.

Run the worker by hand (for debugging) with ``python -m benchmarks._harness SPEC.json``.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import math
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
MiB = 2**20
GiB = 2**30

# Time allowed for a worker to start (interpreter, torch import, inputs) on top of its runs.
_STARTUP_ALLOWANCE_S = 120


class NotAvailable(Exception):
    """Raised by a target when the thing to measure does not exist (e.g. not implemented)."""


@dataclass
class Workload:
    """What a target hands the worker.

    Args:
        run: one iteration (e.g. forward + backward); its return value goes to ``collect``.
        collect: turns the last run's output into arrays/floats to save for comparison.
        sync: waits for queued device work (``torch.cuda.synchronize``) before reading a clock.
        reset_peak / peak_bytes: a device's own peak-memory counter; when given, it replaces
            ``ru_maxrss`` and no address-space limit is set (CUDA maps huge virtual ranges).
    """

    run: Callable[[], Any]
    collect: Callable[[Any], dict[str, Any]] | None = None
    sync: Callable[[], None] | None = None
    reset_peak: Callable[[], None] | None = None
    peak_bytes: Callable[[], int] | None = None


@dataclass
class Measurement:
    """One implementation on one case. ``status``: ok, timeout, oom, error, skipped, n/a."""

    status: str
    time_s: float | None = None
    times_s: list[float] = field(default_factory=list)
    peak_mb: float | None = None
    detail: str = ""
    outputs: str | None = None  # path of the .npz written by the worker (parent side only)
    round_times_s: list[float] = field(default_factory=list)  # one median per process

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("outputs")
        return d


def median_measurement(measurements: Sequence[Measurement]) -> Measurement:
    """Several processes' measurements of one target as one: the process with the median
    time (the lower median), carrying every process's time in ``round_times_s``.

    Sub-millisecond workloads differ by 10-20% from one process to the next (memory layout,
    thread placement), more than the effects measured; alternating processes and taking the
    median over them is what makes such ratios repeatable.
    """
    ok = sorted((m for m in measurements if m.ok), key=lambda m: m.time_s)
    if not ok:
        return measurements[0]
    chosen = ok[(len(ok) - 1) // 2]
    chosen.round_times_s = [m.time_s for m in measurements if m.ok]
    return chosen


# -- parent side ---------------------------------------------------------------------------


def _worker_env(threads: int | None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(threads)
    return env


def _launch(spec: dict, workdir: Path, timeout_s: float, threads: int | None) -> dict:
    """Run one worker; always returns a result dict (with a status), never raises."""
    spec_path = workdir / f"spec_{time.monotonic_ns()}.json"
    spec["result_path"] = str(spec_path.with_suffix(".result.json"))
    spec["outputs_path"] = str(spec_path.with_suffix(".npz"))
    spec_path.write_text(json.dumps(spec))
    cmd = [sys.executable, "-m", "benchmarks._harness", str(spec_path)]
    # A new session lets us kill the worker and any threads/children it started, together.
    proc = subprocess.Popen(
        cmd,
        cwd=REPO_ROOT,
        env=_worker_env(threads),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        log, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"status": "timeout", "detail": f"killed after {timeout_s:.0f} s"}
    result_path = Path(spec["result_path"])
    if result_path.exists():
        return json.loads(result_path.read_text())
    if proc.returncode in (-signal.SIGKILL, 137):
        return {"status": "oom", "detail": "worker was killed (out of memory?)"}
    tail = " | ".join((log or "").strip().splitlines()[-3:])
    return {"status": "error", "detail": f"worker exited with {proc.returncode}: {tail}"}


class Runner:
    """Measures targets in subprocesses; caches one baseline per ``baseline_key``."""

    def __init__(
        self,
        *,
        repeats: int = 5,
        time_limit_s: float = 60.0,
        mem_limit_bytes: int | None = None,
        threads: int | None = None,
        verbose: bool = False,
    ):
        self.repeats = max(1, int(repeats))
        self.time_limit_s = float(time_limit_s)
        self.mem_limit_bytes = mem_limit_bytes
        self.threads = threads
        self.verbose = verbose
        self._tmp = tempfile.TemporaryDirectory(prefix="metricssl-bench-")
        self.workdir = Path(self._tmp.name)
        self._baselines: dict[Any, dict] = {}

    def close(self):
        self._tmp.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _baseline(self, target: str, args: dict, key) -> dict:
        if key not in self._baselines:
            spec = {"target": target, "args": args, "baseline": True}
            self._baselines[key] = _launch(
                spec, self.workdir, _STARTUP_ALLOWANCE_S * 2, self.threads
            )
        return self._baselines[key]

    def measure(self, target: str, args: dict, baseline_key=None) -> Measurement:
        """Time ``target(args).run`` in a fresh process; peak memory above the baseline's."""
        spec = {
            "target": target,
            "args": args,
            "baseline": False,
            "repeats": self.repeats,
            "time_limit_s": self.time_limit_s,
            "mem_limit_bytes": self.mem_limit_bytes,
        }
        # The worker stops repeating once time_limit_s is spent, so it needs at most about
        # two limits (warm-up + repeats) plus its start-up.
        timeout = _STARTUP_ALLOWANCE_S + 3 * self.time_limit_s
        res = _launch(spec, self.workdir, timeout, self.threads)
        if res["status"] == "timeout" and "killed" in res.get("detail", ""):
            res["detail"] = f"> {self.time_limit_s:.0f} s ({res['detail']})"
        m = Measurement(status=res["status"], detail=res.get("detail", ""))
        if m.ok:
            m.times_s = res["times_s"]
            m.time_s = statistics.median(m.times_s)
            if res.get("device_peak_bytes") is not None:
                m.peak_mb = res["device_peak_bytes"] / MiB
            else:
                base = self._baseline(target, args, baseline_key or (target, repr(args)))
                if base.get("status") == "ok":
                    m.peak_mb = max(0, res["maxrss_bytes"] - base["maxrss_bytes"]) / MiB
            if res.get("has_outputs"):
                m.outputs = spec["outputs_path"]
        if self.verbose:
            print(f"    {args} -> {m.status} {m.time_s} {m.detail}", file=sys.stderr)
        return m


def load_outputs(m: Measurement) -> dict[str, Any] | None:
    """The arrays a worker saved with ``Workload.collect`` (None if it saved none)."""
    if not m.outputs or not os.path.exists(m.outputs):
        return None
    import numpy as np

    with np.load(m.outputs, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


# -- worker side ---------------------------------------------------------------------------


def _maxrss_bytes() -> int:
    # Linux reports kilobytes, macOS bytes.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def _vm_size_bytes() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _limit_address_space(extra_bytes: int) -> None:
    """Allow ``extra_bytes`` of address space beyond what the process maps now."""
    current = _vm_size_bytes()
    if current is None:
        return
    # Headroom for thread stacks and malloc arenas that are mapped but barely used.
    limit = current + extra_bytes + 2 * GiB
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "can't allocate memory" in text or "out of memory" in text or "bad_alloc" in text
    )


def _save_outputs(path: str, collected: dict[str, Any]) -> None:
    import numpy as np

    np.savez(path, **{k: np.asarray(v) for k, v in collected.items()})


def _timed(wl: Workload):
    t0 = time.perf_counter()
    out = wl.run()
    if wl.sync:
        wl.sync()
    return time.perf_counter() - t0, out


def _worker(spec: dict) -> dict:
    module_name, func_name = spec["target"].split(":")
    try:
        wl = getattr(importlib.import_module(module_name), func_name)(spec["args"])
    except NotAvailable as e:
        return {"status": "n/a", "detail": str(e) or "not available"}
    if spec["baseline"]:
        return {"status": "ok", "maxrss_bytes": _maxrss_bytes()}
    if spec.get("mem_limit_bytes") and wl.peak_bytes is None:
        _limit_address_space(int(spec["mem_limit_bytes"]))
    if wl.reset_peak:
        wl.reset_peak()
    limit = float(spec["time_limit_s"])
    try:
        warmup, out = _timed(wl)
        if warmup > limit:
            return {"status": "timeout", "detail": f"one run took {warmup:.1f} s > {limit:.0f} s"}
        # Repeat while the time limit allows, at least once.
        repeats = max(1, min(int(spec["repeats"]), int(limit // max(warmup, 1e-9))))
        times = []
        for _ in range(repeats):
            del out  # release the previous output before the next run
            t, out = _timed(wl)
            times.append(t)
    except Exception as e:  # noqa: BLE001 - any failure is a result to report
        if _is_oom(e):
            return {"status": "oom", "detail": str(e).splitlines()[0][:200]}
        return {"status": "error", "detail": f"{type(e).__name__}: {str(e)[:300]}"}
    result = {"status": "ok", "times_s": times, "maxrss_bytes": _maxrss_bytes()}
    if wl.peak_bytes:
        result["device_peak_bytes"] = int(wl.peak_bytes())
    if wl.collect:
        try:
            # The address-space limit is for the measured work, not for saving its outputs.
            _, hard = resource.getrlimit(resource.RLIMIT_AS)
            resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
            _save_outputs(spec["outputs_path"], wl.collect(out))
            result["has_outputs"] = True
        except Exception as e:  # noqa: BLE001
            result["detail"] = f"outputs not saved: {type(e).__name__}: {e}"
    return result


def worker_main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    try:
        result = _worker(spec)
    except Exception:  # noqa: BLE001 - report instead of crashing without a result
        result = {"status": "error", "detail": traceback.format_exc(limit=3)[-400:]}
    Path(spec["result_path"]).write_text(json.dumps(result))


# -- machine info, tables, JSON ------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def mem_available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (None where there is no /proc)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def memory_limit_bytes(limit_gb: float | None) -> float:
    """A worker's memory limit: ``limit_gb`` when given, else 16 GiB or 80% of what is
    available, whichever is less."""
    if limit_gb:
        return limit_gb * GiB
    available = mem_available_bytes()
    return min(16 * GiB, 0.8 * available if available else 16 * GiB)


def _mem_total_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def machine_info(device: str = "cpu", threads: int | None = None) -> dict:
    """What the figures were measured on."""
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info = {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "torch_threads": threads or torch.get_num_threads(),
        "memory_total_gb": round((_mem_total_bytes() or 0) / GiB, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device,
    }
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    for pkg in ("metricssl", "pytorch_metric_learning"):
        try:
            info[pkg] = importlib.import_module(pkg).__version__
        except Exception:  # noqa: BLE001 - a missing package is just not recorded
            info[pkg] = None
    return info


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table: the first column left-aligned, the others right-aligned."""
    cells = [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values):
        return "  ".join(
            v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths))
        ).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep] + [line(r) for r in cells])


def geometric_mean(values: Sequence[float]) -> float | None:
    values = [v for v in values if v and v > 0 and math.isfinite(v)]
    if not values:
        return None
    return math.exp(sum(math.log(v) for v in values) / len(values))


def write_json(name: str, payload: dict, results_dir: Path = RESULTS_DIR) -> Path:
    """Write ``payload`` to ``results_dir/<name>.json`` atomically; returns the path."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m benchmarks._harness SPEC.json")
    # Run the worker from the importable module, not from __main__: targets import
    # benchmarks._harness, and NotAvailable must be the same class on both sides.
    from benchmarks._harness import worker_main as _worker_main

    _worker_main(sys.argv[1])

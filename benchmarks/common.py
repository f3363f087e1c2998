"""Shared helpers of the benchmark scripts: thread set-up, interleaved paired timing, summaries,
peak-RSS sampling, tables and the JSON results that ``run_all.py`` turns into ``docs/PERFORMANCE.md``.

Timing discipline (the machine is shared and loaded): every comparison runs its variants
interleaved in one process, ``A B`` then ``B A`` then ``A B`` ..., so that load drifts hit every
variant alike; we report medians and the median of the per-round ratios, with the load average
(``os.getloadavg()``) sampled before and after.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
ROOT = BENCH_DIR.parent
START = time.perf_counter()  # for the run time recorded with each result


def setup_threads(threads: int = 2) -> None:
    """Fix intra-op threads (and one inter-op thread); the OpenMP wait policy is set by ``_env``."""
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # interop threads can be set once per process
        torch.set_num_interop_threads(1)
    if os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
        print("warning: OMP_WAIT_POLICY is not PASSIVE; timings may be skewed by spinning threads")


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded."""
    return [round(v, 2) for v in os.getloadavg()]


def machine_info(threads: int) -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores_visible": os.cpu_count(),
        "torch_threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
    }


@dataclass
class Sample:
    """Wall and CPU (process) seconds of one timed call."""

    wall: float
    cpu: float


@dataclass
class PairedRun:
    """Samples of several variants measured interleaved; ``load`` before and after."""

    samples: dict[str, list[Sample]] = field(default_factory=dict)
    load_before: list[float] = field(default_factory=list)
    load_after: list[float] = field(default_factory=list)

    def wall(self, name: str) -> list[float]:
        return [s.wall for s in self.samples[name]]

    def cpu(self, name: str) -> list[float]:
        return [s.cpu for s in self.samples[name]]


def time_call(fn: Callable[[], Any]) -> Sample:
    """Run ``fn`` once; wall and process CPU seconds."""
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return Sample(wall=time.perf_counter() - t0, cpu=time.process_time() - c0)


def run_interleaved(
    variants: dict[str, Callable[[], Any]],
    repeats: int,
    warmup: int = 1,
    *,
    label: str = "",
    verbose: bool = True,
) -> PairedRun:
    """Time every variant ``repeats`` times, interleaved; the order alternates each round
    (``A B C``, ``C B A``, ...) so that neither side always runs first.

    Args:
        variants: name -> zero-argument callable (one timed unit: a step, a volume).
        repeats: timed rounds.
        warmup: untimed rounds first (allocator, oneDNN primitive caches).
        label: printed with the per-round progress.
    """
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    run = PairedRun(samples={n: [] for n in names}, load_before=load_average())
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            run.samples[name].append(time_call(variants[name]))
        if verbose:
            parts = ", ".join(f"{n}={run.samples[n][-1].wall:.3f}s" for n in names)
            print(f"  {label} round {r + 1}/{repeats}: {parts} (load {os.getloadavg()[0]:.1f})", flush=True)
    run.load_after = load_average()
    return run


def quantiles(values: Sequence[float]) -> dict[str, float]:
    """Median and quartiles (``q25``, ``q75``) of ``values``."""
    v = sorted(values)
    if len(v) == 1:
        return {"median": v[0], "q25": v[0], "q75": v[0]}
    q = statistics.quantiles(v, n=4, method="inclusive")
    return {"median": statistics.median(v), "q25": q[0], "q75": q[2]}


def ratio_summary(numerator: Sequence[float], denominator: Sequence[float]) -> dict[str, float]:
    """Per-round ratios ``numerator[i] / denominator[i]`` summarised (median, quartiles), plus the
    ratio of the medians."""
    ratios = [a / b for a, b in zip(numerator, denominator, strict=True)]
    out = {f"ratio_{k}": v for k, v in quantiles(ratios).items()}
    out["ratio_of_medians"] = statistics.median(numerator) / statistics.median(denominator)
    return out


class PeakRSS:
    """Peak resident set size of this process while the context is open (sampled every 5 ms from
    ``/proc/self/statm``; ``ru_maxrss`` only gives the peak over the whole process life)."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.start_mb = 0.0
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def rss_mb(self) -> float:
        try:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * self.page / 2**20
        except OSError:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self.rss_mb())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self.start_mb = self.peak_mb = self.rss_mb()
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_mb = max(self.peak_mb, self.rss_mb())


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table (also readable on a terminal)."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_result(name: str, payload: dict[str, Any], out_dir: Path | None = None) -> Path:
    """Write ``<out_dir>/<name>.json`` (default ``benchmarks/results``); returns the path."""
    out = Path(out_dir) if out_dir is not None else RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    payload = {
        "benchmark": name,
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
        "run_seconds": round(time.perf_counter() - START, 1),
        **payload,
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=False) + "\n")
    tmp.replace(path)
    print(f"wrote {path}")
    return path


def rounded(obj: Any, digits: int = 4) -> Any:
    """``obj`` with every float rounded (keeps the JSON results small and diffable)."""
    if isinstance(obj, float):
        return round(obj, digits)
    if isinstance(obj, dict):
        return {k: rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [rounded(v, digits) for v in obj]
    return obj


def make_embeddings(
    num_targets: int, text_dim: int = 384, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random L2-normalised prompt embeddings: ``t1 (1, E)`` and ``t2 (1, K, E)`` (the network's cost
    does not depend on their values)."""
    g = torch.Generator().manual_seed(seed)
    t1 = torch.nn.functional.normalize(torch.randn(1, text_dim, generator=g), dim=-1)
    t2 = torch.nn.functional.normalize(torch.randn(1, num_targets, text_dim, generator=g), dim=-1)
    return t1, t2

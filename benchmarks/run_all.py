"""Run every CPU benchmark (each in its own process) and write ``docs/PERFORMANCE.md`` from their
JSON results in ``benchmarks/results/``.

    python benchmarks/run_all.py               # everything (~30-40 min on a loaded 2-core machine)
    python benchmarks/run_all.py --quick       # every script with --quick
    python benchmarks/run_all.py --only text targets
    python benchmarks/run_all.py --doc-only    # rewrite the doc from the stored results

Every benchmark process gets ``OMP_WAIT_POLICY=PASSIVE`` (idle OpenMP threads sleep instead of
spinning) and 2 threads. ``gpu_h200.py`` needs a CUDA device; here it only runs ``--dry-run``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from perf_doc import write_doc

BENCH_DIR = Path(__file__).resolve().parent

SCRIPTS: dict[str, list[str]] = {
    "text": ["bench_text.py"],
    "overhead": ["bench_overhead.py"],
    "attribution": ["bench_attribution.py"],
    "targets": ["bench_targets.py"],
    "flops": ["bench_flops.py"],
    "volume": ["bench_volume.py"],
    "gpu_dryrun": ["gpu_h200.py", "--dry-run"],
}
QUICK_FLAG = {"gpu_dryrun": None}  # already tiny


def run_scripts(names: list[str], quick: bool) -> dict[str, dict[str, Any]]:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "DUPLUS_BENCH_NO_REEXEC": "1"}
    env.setdefault("OMP_NUM_THREADS", "2")
    status = {}
    for name in names:
        cmd = [sys.executable, str(BENCH_DIR / SCRIPTS[name][0]), *SCRIPTS[name][1:]]
        if quick and QUICK_FLAG.get(name, "--quick"):
            cmd.append("--quick")
        print(f"\n#### {name}: {' '.join(cmd[1:])}  (load {os.getloadavg()[0]:.1f})", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd, env=env, cwd=BENCH_DIR.parent)
        status[name] = {"rc": rc, "seconds": round(time.perf_counter() - t0, 1)}
        print(f"#### {name}: exit {rc} after {status[name]['seconds']} s", flush=True)
    return status


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="pass --quick to every script")
    p.add_argument("--only", nargs="+", choices=list(SCRIPTS), help="run only these")
    p.add_argument("--skip", nargs="+", choices=list(SCRIPTS), default=[], help="do not run these")
    p.add_argument("--doc-only", action="store_true", help="only rewrite docs/PERFORMANCE.md")
    args = p.parse_args(argv)
    if not args.doc_only:
        names = [n for n in (args.only or list(SCRIPTS)) if n not in args.skip]
        status = run_scripts(names, args.quick)
        failed = [n for n, s in status.items() if s["rc"] != 0]
        if failed:
            print(f"failed: {', '.join(failed)}")
    write_doc()


if __name__ == "__main__":
    main()

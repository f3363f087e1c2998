"""Peak memory of ``duplus segment`` on a big CT: K = 25 targets on a 512 x 512 x 300 grid.

A synthetic abdominal CT of 512 x 512 x 300 voxels at 0.8 x 0.8 x 1.5 mm (410 mm field of view,
int16 NIfTI) is segmented by ``duplus segment`` in a child process, with an untrained checkpoint
of the preset (roi 128^3, 1.5 mm; memory does not depend on the weights) and 25 target prompts.
The child's peak resident set size is the kernel's (``ru_maxrss`` of the waited child), so it
covers everything: reading, preprocessing, the sliding windows, the masks, writing.

Variants: ``default`` (the CLI's defaults), ``sw1`` (one window per forward pass) and ``fast``.
The float32 probability stack of the former path (K x 512 x 512 x 300 x 4 bytes, 7.9 GB) is not
run here: it would not fit next to the other jobs on this machine; it is the arithmetic above.

    python benchmarks/bench_memory.py                   # base preset: default, sw1 (long: ~20-40 min)
    python benchmarks/bench_memory.py --quick           # tiny preset, a 256 x 256 x 150 CT
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _env  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)
from cases import write_ct, write_untrained_checkpoint
from common import load_average, machine_info, rounded, write_result

TARGETS = [
    "liver", "spleen", "left kidney", "right kidney", "aorta", "pancreas", "stomach", "gallbladder",
    "esophagus", "inferior vena cava", "portal vein", "left adrenal gland", "right adrenal gland",
    "duodenum", "urinary bladder", "colon", "small bowel", "liver tumour", "kidney tumour",
    "left lung", "right lung", "heart", "vertebrae", "left femur", "right femur",
]  # fmt: skip
VARIANTS: dict[str, list[str]] = {"default": [], "sw1": ["--sw-batch-size", "1"], "fast": ["--fast"]}


_WRAPPER = (
    "import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)"
)


def run_segment(ct: Path, ckpt: Path, out: Path, extra: list[str], threads: int) -> dict[str, Any]:
    """``duplus segment`` in a child process of a fresh wrapper process (so that ``ru_maxrss`` of
    the wrapper's children is this run's alone); its wall time and peak RSS (MB)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [sys.executable, "-m", "duplus.cli", "segment", "-q", "-i", str(ct), "-o", str(out), "-c", str(ckpt),
           "--modality", "CT", "--region", "abdomen", "--device", "cpu", "--targets", *TARGETS, *extra]  # fmt: skip
    load0, t0 = load_average(), time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _WRAPPER, *cmd], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"duplus segment failed ({done.returncode}): {done.stderr[-2000:]}")
    return {
        "args": extra,
        "wall_s": wall,
        "peak_rss_mb": int(done.stdout.strip().splitlines()[-1]) / 1024,
        "load_before": load0,
        "load_after": load_average(),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="base")
    p.add_argument("--shape", type=int, nargs=3, default=[512, 512, 300])
    p.add_argument("--spacing", type=float, nargs=3, default=[0.8, 0.8, 1.5])
    p.add_argument("--roi", type=int, default=128)
    p.add_argument("--variants", nargs="+", default=["sw1", "default"], choices=list(VARIANTS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="tiny preset, 256 x 256 x 150")
    p.add_argument("--name", default="memory", help="results/<name>.json")
    args = p.parse_args(argv)
    if args.quick:
        args.preset, args.shape, args.spacing = "tiny", [256, 256, 150], [1.6, 1.6, 3.0]
    load0 = load_average()
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="duplus-bench-memory-") as tmp:
        ct = write_ct(Path(tmp) / "ct.nii.gz", args.shape, args.spacing)
        ckpt = write_untrained_checkpoint(Path(tmp) / "model.pt", args.preset, args.roi, 1.5)
        for name in args.variants:
            print(
                f"== {name}: duplus segment {' '.join(VARIANTS[name])} (load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
            runs[name] = run_segment(ct, ckpt, Path(tmp) / f"out_{name}", VARIANTS[name], args.threads)
            print(f"   {runs[name]['wall_s']:.0f} s, peak RSS {runs[name]['peak_rss_mb']} MB", flush=True)
    voxels = args.shape[0] * args.shape[1] * args.shape[2]
    payload = {
        "machine": machine_info(args.threads),
        "load_start": load0,
        "load_end": load_average(),
        "quick": args.quick,
        "preset": args.preset,
        "shape": args.shape,
        "spacing_mm": args.spacing,
        "roi": args.roi,
        "targets": len(TARGETS),
        "float32_stack_mb": len(TARGETS) * voxels * 4 / 2**20,
        "masks_mb": len(TARGETS) * voxels / 2**20,
        "input_float32_mb": voxels * 4 / 2**20,
        "runs": runs,
    }
    write_result(args.name, rounded(payload))
    return payload


if __name__ == "__main__":
    main()

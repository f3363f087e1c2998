"""One CT volume on the CPU, end to end: ``duplus segment --fast`` against the default path, and
the Dice the fast path gives up.

**Time.** A synthetic abdominal CT of 224 x 224 x 160 voxels at 1.5 mm (int16 NIfTI), the
``base`` preset (untrained weights: the cost does not depend on them; roi 128^3 at 1.5 mm, the
universal config's), K = 10 target prompts, 2 threads. Each run is the ``duplus segment`` command
in a child process, so its wall time covers everything a user waits for: start-up, loading the
checkpoint and the text encoder, reading the NIfTI, resampling, the windows, resampling back and
writing the masks. The child's CPU time (user + system) is recorded too: on a shared machine the
wall time stretches with the load, CPU time / threads is what an idle machine would need. Runs
alternate (fast, default, default, fast, ...).

**Dice.** On held-out phantom CTs (never used for training or for any choice), each trained
checkpoint given is run by the default path and by ``fast=True``; the mean Dice against the
ground truth is compared, per model, in points.

    python benchmarks/bench_volume.py --checkpoints A.pt B.pt --cases DIR/imagesTs ...
    python benchmarks/bench_volume.py --quick       # tiny preset, a 96^3 CT: checks the mechanics
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
import numpy as np
from cases import write_ct, write_untrained_checkpoint
from common import load_average, machine_info, quantiles, rounded, write_result

TARGETS = [
    "liver", "spleen", "left kidney", "right kidney", "aorta", "pancreas", "stomach", "gallbladder",
    "inferior vena cava", "duodenum",
]  # fmt: skip
_WRAPPER = (
    "import resource, subprocess, sys, time; t = time.perf_counter(); rc = subprocess.call(sys.argv[1:]); "
    "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
    "print(time.perf_counter() - t, u.ru_utime + u.ru_stime, u.ru_maxrss); sys.exit(rc)"
)


def run_cli(args: list[str], threads: int) -> dict[str, Any]:
    """``duplus <args>`` in a child of a fresh wrapper: wall s, CPU s and peak RSS of that child."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [sys.executable, "-c", _WRAPPER, sys.executable, "-m", "duplus.cli", *args]
    load0 = load_average()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"duplus {args[0]} failed ({done.returncode}): {done.stderr[-2000:]}")
    wall, cpu, rss = (float(v) for v in done.stdout.split()[-3:])
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss_mb": rss / 1024,
        "load_before": load0,
        "load_after": load_average(),
    }


def time_volume(args: argparse.Namespace) -> dict[str, Any]:
    """Alternating ``duplus segment`` runs of the fast and the default path."""
    variants = {"fast": ["--fast"], "default": []}
    samples: dict[str, list[dict[str, Any]]] = {n: [] for n in variants}
    with tempfile.TemporaryDirectory(prefix="duplus-bench-volume-") as tmp:
        ct = write_ct(Path(tmp) / "ct.nii.gz", args.shape, [args.spacing] * 3)
        ckpt = write_untrained_checkpoint(Path(tmp) / "model.pt", args.preset, args.roi, args.spacing)
        for r in range(args.repeats):
            for name in list(variants) if r % 2 == 0 else list(variants)[::-1]:
                if r >= args.default_repeats and name == "default":
                    continue
                out = Path(tmp) / f"out_{name}_{r}"
                cli = ["segment", "-q", "-i", str(ct), "-o", str(out), "-c", str(ckpt), "--modality", "CT",
                       "--region", "abdomen", "--device", "cpu", "--targets", *TARGETS, *variants[name]]  # fmt: skip
                print(f"  round {r + 1}: {name} (load {os.getloadavg()[0]:.1f})", flush=True)
                samples[name].append(run_cli(cli, args.threads))
                s = samples[name][-1]
                print(
                    f"    {s['wall_s']:.1f} s wall, {s['cpu_s']:.1f} s CPU, {s['peak_rss_mb']:.0f} MB",
                    flush=True,
                )
    summary = {
        name: {
            "wall_s": quantiles([s["wall_s"] for s in runs]),
            "cpu_s": quantiles([s["cpu_s"] for s in runs]),
            "cpu_per_thread_s": quantiles([s["cpu_s"] / args.threads for s in runs]),
            "samples": runs,
        }
        for name, runs in samples.items()
        if runs
    }
    return {
        "preset": args.preset,
        "shape": args.shape,
        "spacing_mm": args.spacing,
        "roi": args.roi,
        "targets": len(TARGETS),
        "threads": args.threads,
        "variants": {n: " ".join(["duplus segment", *v]) for n, v in variants.items()},
        "runs": summary,
    }


def dice(a: np.ndarray, b: np.ndarray) -> float:
    denom = float(a.sum() + b.sum())
    return 1.0 if denom == 0 else 2.0 * float(np.logical_and(a, b).sum()) / denom


def dice_check(checkpoint: Path, case_dirs: list[Path]) -> dict[str, Any]:
    """Mean Dice of the default and the fast path of ``checkpoint`` on the labelled held-out cases
    of ``case_dirs`` (MSD ``imagesTs`` folders with ``labelsTs`` next to them)."""
    import json

    from duplus.data.io import load_image
    from duplus.inference.predictor import Predictor

    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    known = set(predictor.label_space.targets) if predictor.label_space is not None else set()
    scores: dict[str, dict[str, list[float]]] = {"default": {}, "fast": {}}
    runs: dict[str, Any] = {}
    cases = 0
    for images in case_dirs:
        spec = json.loads((images.parent / "dataset.json").read_text())
        labels = {int(v): n for v, n in spec["labels"].items() if int(v) != 0 and n in known}
        if not labels:
            continue
        for image_path in sorted(images.glob("*.nii.gz")):
            label = np.asarray(load_image(images.parent / "labelsTs" / image_path.name).array[0]).astype(int)
            volume = load_image(image_path)
            cases += 1
            for name, fast in (("default", False), ("fast", True)):
                pred = predictor.predict(volume, spec.get("modality", {}).get("0", "CT"), "abdomen",
                                         list(labels.values()), fast=fast)  # fmt: skip
                runs[name] = pred.run
                for k, (value, target) in enumerate(labels.items()):
                    scores[name].setdefault(target, []).append(dice(pred.masks[k] > 0, label == value))
    mean = {n: float(np.mean([np.mean(v) for v in s.values()])) for n, s in scores.items()}
    return {
        "checkpoint": str(checkpoint),
        "model": _describe(checkpoint),
        "cases": cases,
        "per_target": {n: {t: float(np.mean(v)) for t, v in s.items()} for n, s in scores.items()},
        "mean_dice": mean,
        "fast_minus_default_points": 100.0 * (mean["fast"] - mean["default"]),
        "run": runs,
    }


def _describe(checkpoint: Path) -> str:
    from duplus.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    spacing = ckpt["preprocess"]["spacing"]
    return f"{ckpt['model_config']['preset']} ({spacing[0]:g} mm, roi {ckpt['patch_size'][0]}^3, step {ckpt['step']})"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="base")
    p.add_argument("--shape", type=int, nargs=3, default=[224, 224, 160])
    p.add_argument("--spacing", type=float, default=1.5)
    p.add_argument("--roi", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3, help="rounds of the fast path")
    p.add_argument("--default-repeats", type=int, default=1, help="rounds of the (slow) default path")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--checkpoints", type=Path, nargs="*", default=[], help="trained models for the Dice part")
    p.add_argument("--cases", type=Path, nargs="*", default=[], help="imagesTs folders of held-out cases")
    p.add_argument("--skip-timing", action="store_true", help="only the Dice part (kept timing results)")
    p.add_argument("--quick", action="store_true", help="tiny preset, a 96^3 CT, one round each")
    p.add_argument("--name", default="volume", help="results/<name>.json")
    args = p.parse_args(argv)
    if args.quick:
        args.preset, args.shape, args.roi, args.repeats = "tiny", [96, 96, 96], 64, 1
    load0 = load_average()
    payload: dict[str, Any] = {
        "machine": machine_info(args.threads),
        "load_start": load0,
        "quick": args.quick,
    }
    if args.skip_timing:
        import json

        from common import RESULTS_DIR

        old = json.loads((RESULTS_DIR / f"{args.name}.json").read_text())
        payload["timing"] = old["timing"]
    else:
        print(
            f"== {args.preset}: {args.shape} at {args.spacing} mm, roi {args.roi}, K={len(TARGETS)}",
            flush=True,
        )
        t0 = time.perf_counter()
        payload["timing"] = time_volume(args)
        payload["timing"]["section_s"] = time.perf_counter() - t0
    payload["dice"] = []
    for ckpt in args.checkpoints:
        print(f"== Dice, default vs fast: {ckpt}", flush=True)
        result = dice_check(ckpt, args.cases)
        print(
            f"   {rounded(result['mean_dice'])}: fast - default = {result['fast_minus_default_points']:+.2f} points"
        )
        payload["dice"].append(result)
    payload["load_end"] = load_average()
    write_result(args.name, rounded(payload))
    return payload


if __name__ == "__main__":
    main()

"""GPU benchmark for a lent H200 (or any CUDA device): one prepared script, under 8 minutes.

1. ``duplus train``: 300 steps of the ``base`` preset on CUDA with bf16 autocast (``amp: bf16``),
   96^3 patches of 1 mm phantom CTs, batch 2, as a user runs it (the command in a child process)
   -> steps/s, wall time, the loss curve's ends.
2. ``duplus segment --device cuda``: that checkpoint on a synthetic 224 x 224 x 160 CT at 1.5 mm
   with 10 targets, the default path (bf16 autocast) and ``--fast`` -> wall seconds per command.
3. Training throughput: ``base``, batch 2, 128^3 patches, bf16 autocast, AdamW, Dice + BCE;
   DuPLUS and the DynUNet peer of equal widths in alternating blocks of steps -> patches/s, the
   ratio, peak GPU memory.
4. Whole-volume inference in process: 224 x 224 x 160, 10 targets, roi 128^3, sw batch 4, bf16,
   overlaps 0.5 and 0.25 -> seconds per volume (DuPLUS and DynUNet), and K = 1 vs 10.

Results go to ``benchmarks/results/gpu_h200.json`` and ``docs/PERFORMANCE.md`` is regenerated.

    python benchmarks/gpu_h200.py              # on the GPU machine (about 6-8 minutes)
    python benchmarks/gpu_h200.py --dry-run    # CPU, tiny sizes: proves the script runs (~5 min)

Each section checks the time budget (``--budget-s``) and is skipped, with a note, once it is spent.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _env  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)
import torch
from cases import write_ct
from common import make_embeddings, rounded, write_result
from peers import build_peers, make_batch, make_train_step, make_volume_predict, synthetic_ct_volume

SEGMENT_TARGETS = ["liver", "spleen", "left kidney", "right kidney", "pancreas", "aorta", "stomach",
                   "gallbladder", "inferior vena cava", "duodenum"]  # fmt: skip


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def autocast(device: torch.device, enabled: bool) -> Any:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def train_throughput(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Patches/s of DuPLUS and DynUNet, alternating blocks of ``args.block`` steps."""
    nets = {n: m.to(device) for n, m in build_peers(args.preset, args.targets, ("duplus", "dynunet")).items()}
    batch = {k: v.to(device) for k, v in make_batch(args.batch, args.patch, args.targets).items()}
    steps = {}
    for name, net in nets.items():
        plain = make_train_step(name, net, batch)

        def step(plain: Callable[[], float] = plain) -> None:
            with autocast(device, args.bf16):
                plain()

        steps[name] = step
    for name in nets:  # warm-up: cudnn autotuning, allocator
        for _ in range(args.warmup):
            steps[name]()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    block_s: dict[str, list[float]] = {n: [] for n in nets}
    peak: dict[str, float] = {}
    for r in range(args.rounds):
        for name in list(nets) if r % 2 == 0 else list(nets)[::-1]:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)

            def block(name: str = name) -> None:
                for _ in range(args.block):
                    steps[name]()

            block_s[name].append(timed(block, device))
            if device.type == "cuda":
                peak[name] = max(peak.get(name, 0.0), torch.cuda.max_memory_allocated(device) / 2**30)
    out: dict[str, Any] = {
        "preset": args.preset,
        "batch": args.batch,
        "patch": args.patch,
        "bf16": args.bf16,
        "steps_per_block": args.block,
        "rounds": args.rounds,
    }
    for name in nets:
        per_step = [t / args.block for t in block_s[name]]
        out[name] = {
            "step_s_median": statistics.median(per_step),
            "patches_per_s": args.batch / statistics.median(per_step),
            "peak_gib": peak.get(name),
        }
    out["ratio_duplus_vs_dynunet"] = statistics.median(
        a / b for a, b in zip(block_s["duplus"], block_s["dynunet"], strict=True)
    )
    return out


def volume_seconds(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Seconds per whole volume, interleaved over networks, overlaps and K."""
    nets = {n: m.to(device) for n, m in build_peers(args.preset, args.targets, ("duplus", "dynunet")).items()}
    image = synthetic_ct_volume(args.volume).to(device)
    roi = (args.roi,) * 3
    fns: dict[str, Callable[[], Any]] = {}
    for ov in args.overlaps:
        for k in sorted({1, args.targets}):
            t1, t2 = (t.to(device) for t in make_embeddings(k))
            names = ("duplus", "dynunet") if k == args.targets else ("duplus",)
            for name in names:
                predict = make_volume_predict(name, nets[name], image, t1, t2, roi, ov, args.sw_batch)

                def run(predict: Callable[[], Any] = predict) -> None:
                    with autocast(device, args.bf16):
                        predict()

                fns[f"{name}/K={k}/overlap={ov}"] = run
    for fn in fns.values():
        fn()  # warm-up
    samples: dict[str, list[float]] = {n: [] for n in fns}
    for r in range(args.volume_repeats):
        for name in list(fns) if r % 2 == 0 else list(fns)[::-1]:
            samples[name].append(timed(fns[name], device))
    out: dict[str, Any] = {
        "volume": list(args.volume),
        "roi": list(roi),
        "sw_batch_size": args.sw_batch,
        "bf16": args.bf16,
        "targets": args.targets,
        "seconds_median": {n: statistics.median(v) for n, v in samples.items()},
    }
    for ov in args.overlaps:
        a, b = (
            samples[f"duplus/K={args.targets}/overlap={ov}"],
            samples[f"dynunet/K={args.targets}/overlap={ov}"],
        )
        out[f"ratio_vs_dynunet@{ov}"] = statistics.median(x / y for x, y in zip(a, b, strict=True))
        if args.targets != 1:
            one = samples[f"duplus/K=1/overlap={ov}"]
            out[f"K{args.targets}_vs_K1@{ov}"] = statistics.median(x / y for x, y in zip(a, one, strict=True))
    return out


def _cli(args: list[str], timeout: float) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "duplus.cli", *args], capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(f"duplus {args[0]} failed ({done.returncode}): {done.stderr[-2000:]}")
    return time.perf_counter() - t0, done


def cli_train_and_segment(args: argparse.Namespace, device: torch.device, work: Path) -> dict[str, Any]:
    """``duplus train`` for ``args.train_steps`` steps (bf16 on CUDA), then ``duplus segment`` with
    the checkpoint it wrote: the default path and ``--fast``."""
    import yaml

    from duplus.data.phantoms import make_phantoms

    t0 = time.perf_counter()
    tasks = ("Task01_PhantomAbdomenCT", "Task02_PhantomPancreasCT")
    make_phantoms(work / "ph", cases=1, test_cases=0, shape=(args.phantom,) * 3, progress=False,
                  dataset_cases={t: (args.phantom_cases, 1) for t in tasks}, workers=min(8, os.cpu_count() or 1))  # fmt: skip
    phantoms_s = time.perf_counter() - t0
    cfg = {
        "datasets": [{"spec": str(work / "ph" / t / "dataset.json")} for t in tasks],
        "cache_dir": str(work / "cache"),
        "preprocess": {"spacing": [args.train_spacing] * 3, "ct_window": [-175.0, 250.0]},
        "model": {"preset": args.preset},
        "text": {
            "encoder": str(Path(args.text_encoder).resolve()) if args.text_encoder != "default" else "default"
        },
        "patch_size": [args.train_patch] * 3,
        "batch_size": args.batch,
        "iterations": args.train_steps,
        "steps_per_epoch": args.train_steps,
        "warmup_steps": min(20, args.train_steps - 1),
        "lr": 0.002,
        "amp": "bf16" if args.bf16 else "off",
        "augment": "light",
        "paraphrase_t2": False,
        "val_fraction": 0.0,
        "checkpoint_every_steps": args.train_steps,
        "num_workers": 4 if device.type == "cuda" else 0,
        "device": device.type,
        "threads": None if device.type == "cuda" else 2,
    }
    (work / "train.yaml").write_text(yaml.safe_dump(cfg))
    train_wall, _ = _cli(
        ["train", "--config", str(work / "train.yaml"), "--out", str(work / "run"), "-q"], 1800
    )
    rows = list(csv.DictReader((work / "run" / "metrics.csv").open()))
    out: dict[str, Any] = {
        "phantoms_s": phantoms_s,
        "train": {
            "preset": args.preset,
            "steps": args.train_steps,
            "patch": args.train_patch,
            "batch": args.batch,
            "amp": cfg["amp"],
            "wall_s": train_wall,
            "loop_s": float(rows[-1]["seconds"]),
            "steps_per_s": args.train_steps / float(rows[-1]["seconds"]),
            "train_loss": float(rows[-1]["train_loss"]),
        },
    }
    ct = write_ct(work / "ct.nii.gz", args.volume, [1.5] * 3)
    ckpt = work / "run" / "checkpoint_last.pt"
    out["segment"] = {"volume": list(args.volume), "targets": len(SEGMENT_TARGETS)}
    for name, extra in (("default", []), ("fast", ["--fast"]), ("default_again", [])):
        wall, _ = _cli(["segment", "-q", "-i", str(ct), "-o", str(work / f"seg_{name}"), "-c", str(ckpt),
                        "--modality", "CT", "--region", "abdomen", "--device", device.type,
                        "--targets", *SEGMENT_TARGETS, *extra], 900)  # fmt: skip
        out["segment"][f"{name}_wall_s"] = wall
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny preset and sizes")
    p.add_argument("--preset", default="base")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--targets", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--block", type=int, default=5, help="training steps per timed block")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--volume", type=int, nargs=3, default=[224, 224, 160])
    p.add_argument("--roi", type=int, default=128)
    p.add_argument("--sw-batch", type=int, default=4)
    p.add_argument("--overlaps", type=float, nargs="+", default=[0.5, 0.25])
    p.add_argument("--volume-repeats", type=int, default=3)
    p.add_argument("--no-bf16", dest="bf16", action="store_false")
    p.add_argument("--train-steps", type=int, default=300, help="steps of `duplus train`")
    p.add_argument("--train-patch", type=int, default=96)
    p.add_argument("--train-spacing", type=float, default=1.0)
    p.add_argument("--phantom", type=int, default=96, help="phantom grid (96 -> 1 mm)")
    p.add_argument("--phantom-cases", type=int, default=6, help="training cases per dataset")
    p.add_argument("--budget-s", type=float, default=420.0, help="skip sections once this is spent")
    p.add_argument("--no-doc", action="store_true", help="do not regenerate docs/PERFORMANCE.md")
    p.add_argument(
        "--text-encoder", default="default", help="text encoder of `duplus train` (gpu_prepare.sh's folder)"
    )
    p.add_argument("--name", default=None, help="results/<name>.json (default gpu_h200 / gpu_h200_dryrun)")
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    if args.dry_run:
        device = torch.device("cpu")
        torch.set_num_threads(2)
        args.preset, args.patch, args.warmup, args.block, args.rounds = "tiny", 32, 1, 1, 2
        args.volume, args.roi, args.sw_batch, args.volume_repeats = [64, 64, 48], 32, 2, 1
        args.train_steps, args.train_patch, args.train_spacing, args.phantom = 3, 32, 3.0, 32
        args.phantom_cases = 2
    else:
        if not torch.cuda.is_available():
            p.error("no CUDA device; use --dry-run to check the script on the CPU")
        device = torch.device("cuda")
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    info: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (dry run)",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "dry_run": args.dry_run,
    }
    print(f"== {info['device']}, torch {info['torch']}", flush=True)
    sections: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="duplus-gpu-") as tmp:
        steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("cli", lambda: cli_train_and_segment(args, device, Path(tmp))),
            ("train", lambda: train_throughput(args, device)),
            ("volume", lambda: volume_seconds(args, device)),
        ]
        for key, fn in steps:
            spent = time.perf_counter() - t_start
            if spent > args.budget_s:
                sections[key] = {"skipped": f"time budget spent ({spent:.0f} s > {args.budget_s:.0f} s)"}
                continue
            t0 = time.perf_counter()
            try:
                sections[key] = fn()
            except (RuntimeError, subprocess.TimeoutExpired) as exc:  # keep what the other sections measured
                sections[key] = {"failed": str(exc)[-1500:]}
            sections[key]["section_s"] = time.perf_counter() - t0
            print(key, rounded(sections[key], 3), flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    payload = {"machine": info, "total_s": time.perf_counter() - t_start, **sections}
    write_result(args.name or ("gpu_h200_dryrun" if args.dry_run else "gpu_h200"), rounded(payload))
    if not args.no_doc:
        from perf_doc import write_doc

        write_doc()
    return payload


if __name__ == "__main__":
    main()

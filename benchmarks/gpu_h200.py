"""GPU benchmark for a lent H200 (or any CUDA device), sized to finish in under 5 minutes.

1. Training throughput: ``base`` preset, batch 2, 128^3 patches, bf16 autocast, AdamW, Dice + BCE;
   DuPLUS and the DynUNet peer of equal widths in alternating blocks of steps -> patches/s, the
   ratio, peak GPU memory.
2. Whole-volume inference: a 224 x 224 x 160 volume (1.5 mm), 10 targets, roi 128^3, sw batch 4,
   bf16, overlaps 0.5 and 0.25 -> seconds per volume (DuPLUS ``condition`` once, then
   ``predict_volume_logits``; DynUNet through MONAI ``sliding_window_inference``), and K = 1 vs 10.

    python benchmarks/gpu_h200.py              # on the GPU machine; writes results/gpu_h200.json
    python benchmarks/gpu_h200.py --dry-run    # CPU, tiny sizes: proves the script runs

Each section checks a time budget (``--budget-s``) and is skipped, with a note, if it is spent.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import _env  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)
import torch
from common import make_embeddings, rounded, write_result
from peers import build_peers, make_batch, make_train_step, make_volume_predict, synthetic_ct_volume


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
    p.add_argument("--budget-s", type=float, default=270.0, help="skip sections once this is spent")
    p.add_argument("--name", default=None, help="results/<name>.json (default gpu_h200 / gpu_h200_dryrun)")
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    if args.dry_run:
        device = torch.device("cpu")
        torch.set_num_threads(2)
        args.preset, args.patch, args.warmup, args.block, args.rounds = "tiny", 32, 1, 1, 2
        args.volume, args.roi, args.sw_batch, args.volume_repeats = [64, 64, 48], 32, 2, 1
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
    for key, fn in (("train", train_throughput), ("volume", volume_seconds)):
        spent = time.perf_counter() - t_start
        if spent > args.budget_s:
            sections[key] = {"skipped": f"time budget spent ({spent:.0f} s > {args.budget_s:.0f} s)"}
            continue
        t0 = time.perf_counter()
        sections[key] = fn(args, device)
        sections[key]["section_s"] = time.perf_counter() - t0
        print(key, rounded(sections[key], 3), flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    payload = {"machine": info, "total_s": time.perf_counter() - t_start, **sections}
    write_result(args.name or ("gpu_h200_dryrun" if args.dry_run else "gpu_h200"), rounded(payload))
    return payload


if __name__ == "__main__":
    main()

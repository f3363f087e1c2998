"""Achieved FLOP/s of a DuPLUS forward against a GEMM peak measured on the same machine.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (convolutions, transposed
convolutions and matrix products; normalisation, activations, FiLM and other element-wise work
count zero, which is why a memory-bound 3D U-Net reaches a small fraction of the GEMM rate). The
GEMM peak is a loop of large fp32 ``matmul``s. Forwards and GEMM bursts are interleaved, so the
load hits both; the achieved fraction is the median of the per-round ratios.

The FLOP counts of DuPLUS and of the DynUNet peer (forward, and forward + backward of a training
step) also give a load-independent view of the conditioning's cost.

    python benchmarks/bench_flops.py            # tiny, small, base at 64^3, batch 2
    python benchmarks/bench_flops.py --quick    # tiny and small only
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import _env  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)
import torch
from common import (
    format_table,
    load_average,
    machine_info,
    rounded,
    run_interleaved,
    setup_threads,
    write_result,
)
from peers import build_peers, forward_for, make_batch
from torch.utils.flop_counter import FlopCounterMode

from duplus.losses.segmentation import PartialLabelDiceBCELoss


def count_flops(fn: Any) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def gemm_burst(n: int, iters: int) -> tuple[Any, float]:
    """A callable running ``iters`` fp32 ``n x n`` matmuls, and its FLOP count."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g)
    b = torch.randn(n, n, generator=g)
    out = torch.empty(n, n)

    def burst() -> None:
        for _ in range(iters):
            torch.matmul(a, b, out=out)

    return burst, 2.0 * n**3 * iters


def model_flops(preset: str, batch: dict[str, torch.Tensor], with_train: bool) -> dict[str, Any]:
    """Forward (and training-step) FLOPs of DuPLUS and DynUNet for ``batch``."""
    nets = build_peers(preset, batch["t2"].shape[1], ("duplus", "dynunet", "plain"))
    loss_fn = PartialLabelDiceBCELoss()
    out: dict[str, Any] = {"forward": {}, "train_step": {}}
    for name, net in nets.items():
        net.eval()
        with torch.no_grad():
            out["forward"][name] = count_flops(lambda net=net, name=name: forward_for(name, net, batch))
        if with_train:
            net.train()

            def step(net: torch.nn.Module = net, name: str = name) -> None:
                loss = loss_fn(forward_for(name, net, batch).float(), batch["label"], batch["label_mask"])
                loss.backward()

            out["train_step"][name] = count_flops(step)
    out["forward_ratio_vs_dynunet"] = out["forward"]["duplus"] / out["forward"]["dynunet"]
    out["forward_ratio_vs_plain"] = out["forward"]["duplus"] / out["forward"]["plain"]
    if with_train:
        out["train_ratio_vs_dynunet"] = out["train_step"]["duplus"] / out["train_step"]["dynunet"]
        out["train_ratio_vs_plain"] = out["train_step"]["duplus"] / out["train_step"]["plain"]
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["tiny", "small", "base"])
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--batch", type=int, default=2, help="2 keeps every conv on oneDNN (batch 1 does not)")
    p.add_argument("--targets", type=int, default=5)
    p.add_argument("--gemm-n", type=int, default=1024)
    p.add_argument("--gemm-iters", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--train-flops-presets", nargs="*", default=["tiny", "small"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="tiny and small only")
    p.add_argument("--name", default="flops", help="results/<name>.json")
    args = p.parse_args(argv)
    if args.quick:
        args.presets = [x for x in args.presets if x != "base"]
    setup_threads(args.threads)
    load0 = load_average()
    burst, gemm_flops = gemm_burst(args.gemm_n, args.gemm_iters)
    batch = make_batch(args.batch, args.patch, args.targets)
    results = []
    for preset in args.presets:
        print(f"\n== {preset}", flush=True)
        counts = model_flops(preset, batch, preset in args.train_flops_presets)
        model = build_peers(preset, args.targets, ("duplus",))["duplus"].eval()

        def fwd(model: torch.nn.Module = model) -> None:
            with torch.no_grad():
                forward_for("duplus", model, batch)

        run = run_interleaved({"gemm": burst, "forward": fwd}, args.repeats, warmup=1, label=preset)
        gemm_rates = [gemm_flops / t for t in run.wall("gemm")]
        fwd_rates = [counts["forward"]["duplus"] / t for t in run.wall("forward")]
        results.append(
            {
                "preset": preset,
                "patch": args.patch,
                "batch": args.batch,
                "targets": args.targets,
                "flops": counts,
                "forward_median_s": statistics.median(run.wall("forward")),
                "forward_gflops": statistics.median(fwd_rates) / 1e9,
                "gemm_gflops_median": statistics.median(gemm_rates) / 1e9,
                "gemm_gflops_max": max(gemm_rates) / 1e9,
                "fraction_of_gemm": statistics.median(
                    f / g for f, g in zip(fwd_rates, gemm_rates, strict=True)
                ),
                "load_before": run.load_before,
                "load_after": run.load_after,
            }
        )
    rows = [
        [
            r["preset"],
            f"{r['flops']['forward']['duplus'] / 1e9:.1f}",
            r["forward_median_s"],
            f"{r['forward_gflops']:.1f}",
            f"{r['gemm_gflops_median']:.1f} (max {r['gemm_gflops_max']:.1f})",
            f"{100 * r['fraction_of_gemm']:.1f}%",
            f"{r['flops']['forward_ratio_vs_dynunet']:.3f}",
            f"{r['flops']['forward_ratio_vs_plain']:.3f}",
            f"{r['load_before'][0]:.1f}->{r['load_after'][0]:.1f}",
        ]
        for r in results
    ]
    print()
    print(
        format_table(
            [
                "preset",
                "GFLOP/forward",
                "forward s",
                "achieved GFLOP/s",
                "GEMM GFLOP/s",
                "of GEMM",
                "FLOPs vs DynUNet",
                "FLOPs vs plain",
                "load",
            ],
            rows,
        )
    )
    payload = {
        "machine": machine_info(args.threads),
        "load_start": load0,
        "load_end": load_average(),
        "gemm": {"n": args.gemm_n, "iters": args.gemm_iters, "dtype": "float32"},
        "quick": args.quick,
        "results": results,
    }
    write_result(args.name, rounded(payload))
    return payload


if __name__ == "__main__":
    main()

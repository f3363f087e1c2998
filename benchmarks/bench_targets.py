"""Target scaling: whole-volume inference time against the number of prompted targets K.

The backbone runs once per window whatever K is; only the T2 dynamic head (and the stitching of K
output channels) grows with K. For each preset, every K in ``--targets`` is timed, interleaved,
for the library model (its head evaluates the per-target stacks over chunks of voxels). The FLOP
ratio (``torch.utils.flop_counter``, one window) gives the load-independent expectation.

Target: K = 10 costs <= 1.1x K = 1 (design: <= 1.2x).

    python benchmarks/bench_targets.py           # tiny + small, K = 1 5 10 25
    python benchmarks/bench_targets.py --quick   # tiny only, 2 rounds
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
    make_embeddings,
    ratio_summary,
    rounded,
    run_interleaved,
    setup_threads,
    write_result,
)
from peers import build_duplus, make_volume_predict, synthetic_ct_volume
from torch.utils.flop_counter import FlopCounterMode

VARIANT = "duplus"  # the library model; results keep it as a key


def window_flops(model: torch.nn.Module, patch: int, k: int) -> int:
    """FLOPs (convolutions and matrix products) of one ``patch^3`` window forward with K targets."""
    t1, t2 = make_embeddings(k)
    x = torch.zeros(1, 2, patch, patch, patch)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, torch.zeros(1, dtype=torch.long), t1, t2)
    return int(counter.get_total_flops())


def bench_preset(preset: str, args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(0)
    model = build_duplus(preset).eval()
    image = synthetic_ct_volume(args.volume)
    roi = (args.patch,) * 3
    fns = {}
    for k in args.targets:
        t1, t2 = make_embeddings(k)
        fns[f"{VARIANT}/K={k}"] = make_volume_predict(
            VARIANT, model, image, t1, t2, roi, args.overlap, args.sw_batch
        )
    print(f"\n== {preset}: volume {args.volume}, roi {roi}, K = {args.targets}", flush=True)
    run = run_interleaved(fns, args.repeats, warmup=1, label=preset)
    k1 = args.targets[0]
    flops = {k: window_flops(model, args.patch, k) for k in args.targets}
    per_k: dict[str, Any] = {}
    for k in args.targets:
        entry: dict[str, Any] = {"flops_window": flops[k], "flop_ratio_vs_first": flops[k] / flops[k1]}
        name = f"{VARIANT}/K={k}"
        entry[VARIANT] = {
            "median_s": statistics.median(run.wall(name)),
            "median_cpu_s": statistics.median(run.cpu(name)),
            "samples_s": run.wall(name),
            "vs_first": ratio_summary(run.wall(name), run.wall(f"{VARIANT}/K={k1}")),
        }
        per_k[str(k)] = entry
    return {
        "preset": preset,
        "volume": list(args.volume),
        "roi": list(roi),
        "overlap": args.overlap,
        "sw_batch_size": args.sw_batch,
        "load_before": run.load_before,
        "load_after": run.load_after,
        "per_k": per_k,
    }


def print_table(results: list[dict[str, Any]]) -> None:
    headers = [
        "preset",
        "K",
        "median s",
        "/ K=1 [quartiles]",
        "FLOPs / K=1",
        "load",
    ]
    rows = []
    for r in results:
        for k, e in r["per_k"].items():
            rows.append(
                [
                    r["preset"],
                    k,
                    e[VARIANT]["median_s"],
                    "{ratio_median:.3f} [{ratio_q25:.3f}-{ratio_q75:.3f}]".format(**e[VARIANT]["vs_first"]),
                    f"{e['flop_ratio_vs_first']:.3f}",
                    f"{r['load_before'][0]:.1f}->{r['load_after'][0]:.1f}",
                ]
            )
    print()
    print(format_table(headers, rows))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["tiny", "small"])
    p.add_argument(
        "--targets", type=int, nargs="+", default=[1, 5, 10, 25], help="K values; first = baseline"
    )
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--volume", type=int, nargs=3, default=[64, 96, 96], help="D H W")
    p.add_argument("--overlap", type=float, default=0.25)
    p.add_argument("--sw-batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="tiny only, 2 rounds")
    p.add_argument("--name", default="targets", help="results/<name>.json")
    args = p.parse_args(argv)
    if args.quick:
        args.presets, args.repeats = ["tiny"], 2
    setup_threads(args.threads)
    load0 = load_average()
    results = [bench_preset(preset, args) for preset in args.presets]
    print_table(results)
    payload = {
        "machine": machine_info(args.threads),
        "load_start": load0,
        "load_end": load_average(),
        "quick": args.quick,
        "results": results,
    }
    write_result(args.name, rounded(payload))
    return payload


if __name__ == "__main__":
    main()

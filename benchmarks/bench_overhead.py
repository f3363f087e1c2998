"""The cost of the conditioning: DuPLUS against the same backbone without it.

For each preset, one training step (AdamW, Dice + BCE, batch 2, patch 64^3) and one whole-volume
Gaussian sliding-window prediction (DuPLUS: ``condition`` once, then ``forward_conditioned`` per
window) of three networks, interleaved in one process:

* ``duplus``: the library model, FiLM at every residual block + the T2 dynamic head over ``K``
  targets (evaluated over chunks of voxels by ``DynamicHead.run_heads``);
* ``dynunet``: MONAI ``DynUNet`` of equal widths, ``out_channels = K`` (the design's peer);
* ``plain``: DuPLUS's own backbone, no conditioning, static 1x1x1 head (the pure price of the prompts).

Target: DuPLUS / peer <= 1.05 (design: <= 1.10).

    python benchmarks/bench_overhead.py            # tiny + small, ~5 min on a loaded 2-core box
    python benchmarks/bench_overhead.py --quick    # tiny only, fewer rounds
    python benchmarks/bench_overhead.py --with-base  # + base, one 96^3 window forward (slow)
    python benchmarks/bench_overhead.py --presets --with-base --name overhead_base  # base only
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
from peers import (
    build_peers,
    forward_for,
    make_batch,
    make_train_step,
    make_volume_predict,
    synthetic_ct_volume,
)

from duplus.models.registry import count_parameters, get_preset

NETWORKS = ("duplus", "dynunet", "plain")
OURS = ("duplus",)
PEERS = ("dynunet", "plain")


def summarise(run: Any, names: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "median_s": {n: statistics.median(run.wall(n)) for n in names},
        "median_cpu_s": {n: statistics.median(run.cpu(n)) for n in names},
        "samples_s": {n: run.wall(n) for n in names},
        "load_before": run.load_before,
        "load_after": run.load_after,
    }
    out["ratios"] = {
        f"{ours}/{peer}": ratio_summary(run.wall(ours), run.wall(peer))
        for ours in OURS
        for peer in PEERS
        if ours in names and peer in names
    }
    return out


def bench_preset(preset: str, args: argparse.Namespace) -> dict[str, Any]:
    k = args.targets
    torch.manual_seed(0)
    nets = build_peers(preset, k, NETWORKS)
    params = {n: count_parameters(m) for n, m in nets.items()}
    print(f"\n== {preset}: features {get_preset(preset).features}, parameters {params}", flush=True)
    result: dict[str, Any] = {
        "preset": preset,
        "features": list(get_preset(preset).features),
        "params": params,
    }

    batch = make_batch(args.batch, args.patch, k)
    steps = {n: make_train_step(n, m, batch) for n, m in nets.items()}
    run = run_interleaved(steps, args.train_repeats, warmup=1, label=f"{preset} train")
    result["train"] = {"batch": args.batch, "patch": args.patch, **summarise(run, NETWORKS)}

    image = synthetic_ct_volume(args.volume)
    t1, t2 = make_embeddings(k)
    roi = (args.patch,) * 3
    preds = {
        n: make_volume_predict(n, m, image, t1, t2, roi, args.overlap, args.sw_batch) for n, m in nets.items()
    }
    run = run_interleaved(preds, args.infer_repeats, warmup=1, label=f"{preset} infer")
    result["infer"] = {
        "volume": list(args.volume),
        "roi": list(roi),
        "overlap": args.overlap,
        "sw_batch_size": args.sw_batch,
        **summarise(run, NETWORKS),
    }
    return result


def bench_base_window(args: argparse.Namespace) -> dict[str, Any]:
    """``base`` at 96^3: one window forward per network (no grad), interleaved."""
    k, s = args.targets, 96
    nets = build_peers("base", k, NETWORKS)
    for m in nets.values():
        m.eval()
    batch = make_batch(1, s, k)

    def fwd(name: str) -> Any:
        def call() -> None:
            with torch.no_grad():
                forward_for(name, nets[name], batch)

        return call

    print("\n== base: one 96^3 window forward", flush=True)
    run = run_interleaved({n: fwd(n) for n in NETWORKS}, args.base_repeats, warmup=1, label="base fwd")
    return {
        "preset": "base",
        "features": list(get_preset("base").features),
        "params": {n: count_parameters(m) for n, m in nets.items()},
        "window_forward": {"window": [s] * 3, **summarise(run, NETWORKS)},
    }


def print_tables(results: list[dict[str, Any]]) -> None:
    headers = [
        "preset",
        "what",
        *(f"{n} s" for n in NETWORKS),
        *(f"{o}/{p}" for o in OURS for p in PEERS),
        "load",
    ]
    rows = []
    for r in results:
        for what in ("train", "infer", "window_forward"):
            if what not in r:
                continue
            m = r[what]
            rows.append(
                [
                    r["preset"],
                    what,
                    *(m["median_s"][n] for n in NETWORKS),
                    *(f"{m['ratios'][f'{o}/{p}']['ratio_median']:.3f}" for o in OURS for p in PEERS),
                    f"{m['load_before'][0]:.1f}->{m['load_after'][0]:.1f}",
                ]
            )
    print()
    print(format_table(headers, rows))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="*", default=["tiny", "small"], help="none with --with-base: base only")
    p.add_argument("--targets", type=int, default=5, help="K prompts / output channels")
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--volume", type=int, nargs=3, default=[64, 96, 96], help="D H W of the predicted volume")
    p.add_argument("--overlap", type=float, default=0.25)
    p.add_argument("--sw-batch", type=int, default=2)
    p.add_argument("--train-repeats", type=int, default=3)
    p.add_argument("--infer-repeats", type=int, default=3)
    p.add_argument("--with-base", action="store_true", help="also base, one 96^3 window forward")
    p.add_argument("--base-repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="tiny only, 3 rounds")
    p.add_argument("--name", default="overhead", help="results/<name>.json")
    args = p.parse_args(argv)
    if args.quick:
        args.presets, args.train_repeats, args.infer_repeats = ["tiny"], 3, 3
    setup_threads(args.threads)
    load0 = load_average()
    results = [bench_preset(preset, args) for preset in args.presets]
    if args.with_base:
        results.append(bench_base_window(args))
    print_tables(results)
    payload = {
        "machine": machine_info(args.threads),
        "load_start": load0,
        "load_end": load_average(),
        "targets": args.targets,
        "quick": args.quick,
        "results": results,
    }
    write_result(args.name, rounded(payload))
    return payload


if __name__ == "__main__":
    main()

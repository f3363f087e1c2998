"""Where the conditioning's time goes: the dynamic head's price and FiLM's.

The same training step and whole-volume prediction as ``bench_overhead.py``, interleaved, for:

* ``plain``: the backbone without prompts (static head), the reference;
* ``duplus_head_only``: no T1 conditioning, the library's dynamic head -> the head's price;
* ``duplus``: the library model (FiLM folded into the norms + dynamic head) -> minus the above,
  FiLM's price;
* ``duplus_unfused``: FiLM as a separate pass after each norm (``FiLM.fuse_into_norm = False``).

    python benchmarks/bench_attribution.py            # tiny and small
    python benchmarks/bench_attribution.py --quick    # tiny only, fewer rounds
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
    DUPLUS_VARIANTS,
    build_peers,
    make_batch,
    make_train_step,
    make_volume_predict,
    synthetic_ct_volume,
)

NETWORKS = ("plain", "duplus_head_only", "duplus", "duplus_unfused")


def bench_preset(preset: str, args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(0)
    out: dict[str, Any] = {"preset": preset}
    for what in ("train", "infer"):
        nets = build_peers(preset, args.targets, NETWORKS)  # fresh weights and optimisers per part
        if what == "train":
            batch = make_batch(args.batch, args.patch, args.targets)
            fns = {n: make_train_step(n, m, batch) for n, m in nets.items()}
            repeats = args.train_repeats
        else:
            image = synthetic_ct_volume(args.volume)
            t1, t2 = make_embeddings(args.targets)
            roi = (args.patch,) * 3
            fns = {n: make_volume_predict(n, m, image, t1, t2, roi, args.overlap, 2) for n, m in nets.items()}
            repeats = args.infer_repeats
        print(f"\n== {preset} {what}", flush=True)
        run = run_interleaved(fns, repeats, warmup=1, label=f"{preset} {what}", verbose=False)
        out[what] = {
            "median_s": {n: statistics.median(run.wall(n)) for n in NETWORKS},
            "vs_plain": {n: ratio_summary(run.wall(n), run.wall("plain")) for n in NETWORKS},
            "vs_library": {n: ratio_summary(run.wall(n), run.wall("duplus")) for n in NETWORKS},
            "load_before": run.load_before,
            "load_after": run.load_after,
        }
        rows = [
            [
                n,
                out[what]["median_s"][n],
                f"{out[what]['vs_plain'][n]['ratio_median']:.3f}",
                f"{out[what]['vs_library'][n]['ratio_median']:.3f}",
            ]
            for n in NETWORKS
        ]
        print(format_table(["network", "median s", "/ plain", "/ library"], rows))
        print(f"load {run.load_before[0]:.1f} -> {run.load_after[0]:.1f}")
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["tiny", "small"])
    p.add_argument("--targets", type=int, default=5)
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--volume", type=int, nargs=3, default=[64, 96, 96])
    p.add_argument("--overlap", type=float, default=0.25)
    p.add_argument("--train-repeats", type=int, default=3)
    p.add_argument("--infer-repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="tiny only, 2 rounds")
    p.add_argument("--name", default="attribution", help="results/<name>.json")
    args = p.parse_args(argv)
    if args.quick:
        args.presets, args.train_repeats, args.infer_repeats = ["tiny"], 2, 2
    setup_threads(args.threads)
    load0 = load_average()
    results = [bench_preset(preset, args) for preset in args.presets]
    payload = {
        "machine": machine_info(args.threads),
        "load_start": load0,
        "load_end": load_average(),
        "quick": args.quick,
        "targets": args.targets,
        "variants": {"plain": "backbone without prompts, static head", **DUPLUS_VARIANTS},
        "results": results,
    }
    write_result(args.name, rounded(payload))
    return payload


if __name__ == "__main__":
    main()

"""The frozen text encoder: forward calls per training step, encode latency, cached lookups.

1. A tiny phantom training run (``duplus.training.trainer.Trainer``, ``tiny`` preset, 32^3) counts
   the encoder's forward calls at warm-up, in every training step, and over the whole run
   (validation included). Expected: 0 per step after warm-up.
2. ``TextEncoder().encode`` latency for 1, 8 and 32 distinct prompts (all-MiniLM-L6-v2), and the
   ``EmbeddingCache.get`` latency for the same prompts once cached; interleaved rounds.

    python benchmarks/bench_text.py            # ~1-2 min
    python benchmarks/bench_text.py --quick    # fewer steps and rounds
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

import _env  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)
import yaml
from common import (
    format_table,
    load_average,
    machine_info,
    rounded,
    run_interleaved,
    setup_threads,
    time_call,
    write_result,
)

from duplus.text.prompts import t2_prompts
from duplus.training.trainer import Trainer

ORGANS = ("liver", "spleen", "left kidney", "right kidney", "aorta", "pancreas", "stomach", "white matter")


def tiny_config(path: Path, phantoms: Path, cache: Path, iterations: int, threads: int) -> Path:
    """A tiny training config over three phantom datasets (the shape of the tests' config)."""
    cfg = {
        "datasets": [
            {"spec": str(phantoms / "Task01_PhantomAbdomenCT" / "dataset.json")},
            {"spec": str(phantoms / "Task04_PhantomBrainMRI" / "dataset.json"), "weight": 0.5},
            {"spec": str(phantoms / "Task06_PhantomHeadNeckPET" / "dataset.json"), "weight": 0.5},
        ],
        "cache_dir": str(cache),
        "preprocess": {"spacing": [3.0, 3.0, 3.0]},
        "model": {"preset": "tiny"},
        "patch_size": [32, 32, 32],
        "batch_size": 2,
        "iterations": iterations,
        "steps_per_epoch": max(1, iterations // 2),
        "warmup_steps": 1,
        "val_fraction": 0.34,
        "val_max_cases": 1,
        "checkpoint_every_steps": 1000,
        "paraphrase_t2": True,
        "threads": threads,
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


class CountingTrainer(Trainer):
    """A :class:`Trainer` that records the text encoder's forward calls made by each training step."""

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        before = self.text_encoder.forward_count
        out = super().train_step(batch)
        self.step_encoder_calls.append(self.text_encoder.forward_count - before)
        return out

    def setup(self) -> None:
        self.step_encoder_calls: list[int] = []
        super().setup()


def encoder_calls_per_step(iterations: int, threads: int) -> dict[str, Any]:
    from duplus.data.phantoms import make_phantoms
    from duplus.training.api import resolve_train_config

    with tempfile.TemporaryDirectory(prefix="duplus-bench-text-") as tmp:
        root = Path(tmp)
        make_phantoms(root / "phantoms", cases=2, test_cases=1, shape=(32, 32, 32), progress=False)
        cfg_path = tiny_config(root / "c.yaml", root / "phantoms", root / "cache", iterations, threads)
        trainer = CountingTrainer(resolve_train_config(cfg_path), root / "run", progress=False)
        sample = time_call(trainer.fit)
        encoder = trainer.text_encoder
        return {
            "iterations": iterations,
            "warmup_encoder_calls": trainer.encoder_calls_after_warmup,
            "warmup_prompts_cached": len(trainer.prompt_cache),
            "per_step_encoder_calls": trainer.step_encoder_calls,
            "run_encoder_calls_after_warmup": encoder.forward_count - trainer.encoder_calls_after_warmup,
            "cache_hits": trainer.prompt_cache.hits,
            "cache_misses": trainer.prompt_cache.misses,
            "fit_seconds": sample.wall,
        }


def prompt_set(n: int, offset: int) -> list[str]:
    """``n`` distinct realistic prompts (T2 paraphrases of abdominal targets)."""
    pool = [p for organ in ORGANS for p in t2_prompts(organ, "CT")]
    return [pool[(offset + i) % len(pool)] for i in range(n)]


def encode_latency(sizes: list[int], repeats: int, lookups: int) -> dict[str, Any]:
    from duplus.text.cache import EmbeddingCache
    from duplus.text.encoder import TextEncoder

    encoder = TextEncoder()
    cache = EmbeddingCache(encoder)
    fns = {}
    for n in sizes:
        texts = prompt_set(n, offset=n)
        fns[f"encode/{n}"] = lambda texts=texts: encoder.encode(texts)
        cache.get(texts)  # fill

        def lookup(texts: list[str] = texts) -> None:
            for _ in range(lookups):
                cache.get(texts)

        fns[f"cached/{n}"] = lookup
    run = run_interleaved(fns, repeats, warmup=1, label="text", verbose=False)
    out: dict[str, Any] = {
        "encoder": encoder.model_id,
        "embed_dim": encoder.embed_dim,
        "load_before": run.load_before,
        "load_after": run.load_after,
    }
    for n in sizes:
        out[str(n)] = {
            "encode_ms": 1e3 * statistics.median(run.wall(f"encode/{n}")),
            "cached_ms": 1e3 * statistics.median(run.wall(f"cached/{n}")) / lookups,
        }
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=6, help="training steps of the tiny run")
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--lookups", type=int, default=200, help="cached lookups per timed sample")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--name", default="text", help="results/<name>.json")
    args = p.parse_args(argv)
    if args.quick:
        args.iterations, args.repeats, args.lookups = 4, 5, 50
    setup_threads(args.threads)
    load0 = load_average()
    print("== encoder calls in a tiny training run", flush=True)
    calls = encoder_calls_per_step(args.iterations, args.threads)
    print(
        f"warm-up: {calls['warmup_encoder_calls']} encoder call(s) for {calls['warmup_prompts_cached']} prompts; "
        f"per step after warm-up: {calls['per_step_encoder_calls']}; "
        f"whole run after warm-up (validation included): {calls['run_encoder_calls_after_warmup']}"
    )
    print("== encode latency", flush=True)
    latency = encode_latency(args.sizes, args.repeats, args.lookups)
    rows = [[n, latency[str(n)]["encode_ms"], latency[str(n)]["cached_ms"]] for n in args.sizes]
    print(format_table(["prompts", "encode ms", "cached lookup ms"], rows))
    print(f"load {latency['load_before'][0]:.1f} -> {latency['load_after'][0]:.1f}")
    payload = {
        "machine": machine_info(args.threads),
        "load_start": load0,
        "load_end": load_average(),
        "quick": args.quick,
        "training": calls,
        "latency": latency,
    }
    write_result(args.name, rounded(payload))
    return payload


if __name__ == "__main__":
    main()

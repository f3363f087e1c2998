"""Write ``docs/PERFORMANCE.md`` from the benchmarks' JSON results in ``benchmarks/results/``
(called by ``run_all.py``; ``python benchmarks/run_all.py --doc-only`` rewrites the doc alone)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results"
DOC = BENCH_DIR.parent / "docs" / "PERFORMANCE.md"


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
        return str(v)

    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(out)


def load_str(before: list[float], after: list[float]) -> str:
    return f"{before[0]:.1f} -> {after[0]:.1f}"


def per_round_median(a: list[float], b: list[float]) -> float:
    ratios = sorted(x / y for x, y in zip(a, b, strict=True))
    n = len(ratios)
    return ratios[n // 2] if n % 2 else 0.5 * (ratios[n // 2 - 1] + ratios[n // 2])


def two_level(value: float, target: float, design: float) -> str:
    if value <= target:
        return "met"
    return "met (design only)" if value <= design else "**missed**"


def verdict(value: float, target: float) -> str:
    return "met" if value <= target else "**missed**"


def provenance(d: dict[str, Any]) -> str:
    quick = " (a `--quick` run)" if d.get("quick") else ""
    return (
        f"_Measured {d['written']}{quick}; load average (1/5/15 min) {d['load_start']} at the start, "
        f"{d['load_end']} at the end; {d['machine']['torch_threads']} threads, "
        f"OMP_WAIT_POLICY={d['machine']['omp_wait_policy'] or 'unset'}._"
    )


# Results written before ``DynamicHead.run_heads`` evaluated the stacks over chunks of voxels carry
# the benchmark-local prototype of that change under this name; their ``duplus`` is the old head.
PRE_CHUNKING = "duplus_chunked"


def stale_base_note(r: dict[str, Any]) -> str:
    """What a ``base`` window-forward row measured before the chunked head landed means now."""
    m = r["window_forward"]
    if PRE_CHUNKING not in m["median_s"]:
        return ""
    rat = m["ratios"][f"{PRE_CHUNKING}/plain"]
    return (
        " It was measured before the chunked head landed in the library: its DuPLUS column is the "
        "former whole-window head. The chunked prototype measured alongside it (the head the library "
        f"has now) took {m['median_s'][PRE_CHUNKING]:.1f} s, {rat['ratio_median']:.2f}x `plain` "
        f"[{rat['ratio_q25']:.2f}-{rat['ratio_q75']:.2f}]. Not re-measured since: "
        "`bench_overhead.py --presets --with-base --name overhead_base` refreshes it."
    )


def stale_note(script: str) -> str:
    """A warning for a section whose results predate the chunked head (see :data:`PRE_CHUNKING`)."""
    return (
        "**Stale: measured before the chunked head landed in the library.** The DuPLUS numbers here "
        "are the former whole-window head; the prototype measured alongside (the head the library "
        f"has now) is stored as `{PRE_CHUNKING}` in the JSON. `python benchmarks/{script}` refreshes it.\n\n"
    )


def section_overhead(d: dict[str, Any] | None, summary: list[list[str]]) -> str:
    if d is None:
        return "## 1. The cost of the conditioning\n\nNot run yet (`python benchmarks/bench_overhead.py`).\n"
    rows, worst = [], {}
    stale = any(PRE_CHUNKING in r[w]["median_s"] for r in d["results"] for w in ("train", "infer") if w in r)
    for r in d["results"]:
        for what in ("train", "infer", "window_forward"):
            if what not in r:
                continue
            m = r[what]
            rat = m["ratios"]
            rows.append(
                [
                    r["preset"],
                    what,
                    m["median_s"]["duplus"],
                    m["median_s"]["dynunet"],
                    m["median_s"]["plain"],
                    f"{rat['duplus/dynunet']['ratio_median']:.2f} [{rat['duplus/dynunet']['ratio_q25']:.2f}-{rat['duplus/dynunet']['ratio_q75']:.2f}]",
                    f"{rat['duplus/plain']['ratio_median']:.2f} [{rat['duplus/plain']['ratio_q25']:.2f}-{rat['duplus/plain']['ratio_q75']:.2f}]",
                    f"{per_round_median(m['samples_s']['plain'], m['samples_s']['dynunet']):.2f}",
                    len(m["samples_s"]["duplus"]),
                    load_str(m["load_before"], m["load_after"]),
                ]
            )
            for key in ("duplus/dynunet", "duplus/plain"):
                worst[(what, key)] = max(worst.get((what, key), 0.0), rat[key]["ratio_median"])
    for what, label in (("train", "training step"), ("infer", "sliding-window volume")):
        if (what, "duplus/dynunet") not in worst:
            continue
        for key, peer in (("duplus/dynunet", "DynUNet"), ("duplus/plain", "own backbone, no conditioning")):
            v = worst[(what, key)]
            summary.append(
                [
                    f"{label}: DuPLUS / {peer} (worst preset){' (stale: former head)' if stale else ''}",
                    "<= 1.05 (design <= 1.10)",
                    f"{v:.2f}",
                    two_level(v, 1.05, 1.10),
                ]
            )
    base_text = ""
    if "base_note" in d:
        base_stale = "".join(stale_base_note(r) for r in d["results"] if "window_forward" in r)
        base_text = (
            "The `base` row is one 96^3 window forward (batch 1, no autograd; "
            "`bench_overhead.py --presets --with-base`), not a training step or a volume, which take "
            f"too long here; {d['base_note']}{base_stale}"
        )
    p = d["results"][0]
    return f"""## 1. The cost of the conditioning (`bench_overhead.py`)

{stale_note("bench_overhead.py") if stale else ""}One training step (AdamW, partial-label Dice + BCE, batch {p["train"]["batch"]}, patch {p["train"]["patch"]}^3)
and one whole-volume Gaussian sliding-window prediction ({"x".join(map(str, p["infer"]["volume"]))} volume,
roi {p["infer"]["roi"][0]}^3, overlap {p["infer"]["overlap"]}, window batch {p["infer"]["sw_batch_size"]}),
K = {d["targets"]} targets, three networks interleaved in one process:

* **duplus**: the library model (FiLM at every residual block, T2 dynamic head whose per-target
  stacks `DynamicHead.run_heads` evaluates over chunks of voxels: 4096 without autograd, 32768
  with); inference takes the library path (`model.condition` once, then `predict_volume_logits`
  -> `forward_conditioned`).
* **dynunet**: MONAI `DynUNet`, equal widths, kernel 3, strides `[1, 2, 2, ...]`, `res_block=True`,
  instance norm, `out_channels = K` (the design's peer).
* **plain**: DuPLUS's own stems + encoder + decoder, no T1 conditioning, a static `Conv3d(8, K, 1)` head:
  the same backbone without the prompts, so `duplus / plain` is the price of the conditioning alone.

Medians in seconds; ratios are medians of per-round ratios [quartiles]. On this loaded machine the
same ratio moves by 0.1-0.2 between sessions (compare the `bench_attribution.py` table below, a
separate session with the same sizes); the quartiles give the spread within one session.

{table(["preset", "what", "DuPLUS s", "DynUNet s", "plain s", "DuPLUS / DynUNet", "DuPLUS / plain", "plain / DynUNet", "rounds", "load"], rows)}

Parameters: {", ".join(f"{r['preset']}: DuPLUS {r['params']['duplus'] / 1e6:.2f} M, DynUNet {r['params']['dynunet'] / 1e6:.2f} M" for r in d["results"])}
(the DuPLUS count includes the FiLM MLP and the head's controller, which run once per volume).

{provenance(d)}

{base_text}
"""


def section_attribution(d: dict[str, Any] | None) -> str:
    if d is None:
        return "### Where the time goes\n\nNot run yet (`python benchmarks/bench_attribution.py`).\n"
    names = list(d["results"][0]["train"]["median_s"])  # the script's order
    rows = []
    for r in d["results"]:
        for what in ("train", "infer"):
            m = r[what]
            rows.append(
                [r["preset"], what]
                + [f"{m['vs_plain'][n]['ratio_median']:.2f}" for n in names]
                + [load_str(m["load_before"], m["load_after"])]
            )
    legend = "\n".join(f"* `{n}`: {d['variants'][n]}" for n in names)
    stale = (
        f"\n\n**Measured before the chunked head landed in the library** and not re-run since: in this "
        f"table `duplus_head_only`, `duplus` and `duplus_fused` use the former whole-window head, and "
        f"`{PRE_CHUNKING}` (then a benchmark-local prototype) is the head the library has now. "
        "`python benchmarks/bench_attribution.py` refreshes it."
        if PRE_CHUNKING in names
        else ""
    )
    return f"""### Where the time goes (`bench_attribution.py`)

The same step and volume as above, K = {d["targets"]}, {len(names)} networks interleaved (few rounds:
read differences under ~10 % as noise); each cell is the median per-round ratio to `plain` (the
backbone without prompts). `duplus_head_only` vs `plain` is the dynamic head's price, `duplus` vs
`duplus_head_only` FiLM's; the columns after `duplus` are benchmark-local prototypes.{stale}

{legend}

{table(["preset", "what", *names, "load"], rows)}

{provenance(d)}
"""


def section_targets(d: dict[str, Any] | None, summary: list[list[str]]) -> str:
    if d is None:
        return "## 2. Target scaling\n\nNot run yet (`python benchmarks/bench_targets.py`).\n"
    rows = []
    stale = any(PRE_CHUNKING in e for r in d["results"] for e in r["per_k"].values())
    for r in d["results"]:
        for k, e in r["per_k"].items():
            rows.append(
                [
                    r["preset"],
                    k,
                    e["duplus"]["median_s"],
                    "{ratio_median:.2f} [{ratio_q25:.2f}-{ratio_q75:.2f}]".format(**e["duplus"]["vs_first"]),
                    f"{e['flop_ratio_vs_first']:.3f}",
                    len(e["duplus"]["samples_s"]),
                    load_str(r["load_before"], r["load_after"]),
                ]
            )
        if "10" in r["per_k"]:
            x = r["per_k"]["10"]["duplus"]["vs_first"]["ratio_median"]
            summary.append(
                [
                    f"10 targets / 1 target, inference, {r['preset']}{' (stale: former head)' if stale else ''}",
                    "<= 1.1 (design <= 1.2)",
                    f"{x:.2f}",
                    two_level(x, 1.1, 1.2),
                ]
            )
    r0 = d["results"][0]
    return f"""## 2. Target scaling (`bench_targets.py`)

{stale_note("bench_targets.py") if stale else ""}Whole-volume prediction ({"x".join(map(str, r0["volume"]))}, roi {r0["roi"][0]}^3, overlap {r0["overlap"]}) for
K = {", ".join(r0["per_k"])} prompted targets with the library model, all K values interleaved; "/ K=1"
is the median of per-round ratios [quartiles]. "FLOPs / K=1" is the load-independent ratio of one
window's convolution + matmul FLOPs (`FlopCounterMode`).

{table(["preset", "K", "median s", "/ K=1", "FLOPs / K=1", "rounds", "load"], rows)}

{provenance(d)}
"""


def section_volume(d: dict[str, Any] | None, summary: list[list[str]]) -> str:
    if d is None:
        return "## 3. CPU time per volume\n\nNot run yet (`python benchmarks/bench_volume.py`).\n"
    t = d["timing"]
    rows = [
        [
            m["setting"],
            "x".join(map(str, m["grid"])),
            m["windows_run"],
            m["wall_s"],
            m["cpu_s"],
            f"{m['peak_rss_mb']:.0f}",
            load_str(m["load_before"], m["load_after"]),
        ]
        for m in t["measured"]
    ]
    counts = [
        [k, "x".join(map(str, v["grid"])), v["windows"], v["windows_run"]]
        for k, v in t["window_counts"].items()
    ]
    best = min(t["measured"], key=lambda m: m["wall_s"]) if t["measured"] else None
    if best is not None and t["preset"] == "base" and t["targets"] == 10:
        summary.append(
            [
                "base preset, 224x224x160 volume, 10 targets, 2 threads (stretch)",
                "<= 60 s",
                f"{best['wall_s']:.0f} s wall / {best['cpu_s']:.0f} s CPU ({best['setting']})",
                verdict(best["wall_s"], 60.0),
            ]
        )
    dice = d["dice"]
    if "skipped" in dice:
        dice_text = (
            f"**Dice: not measured.** {dice['skipped']}. An untrained base model gives meaningless Dice, "
            "so the Dice part needs the demo's trained tiny model (`make demo` writes "
            "`runs/demo/train/checkpoint_best.pt`); then `python benchmarks/bench_volume.py` compares "
            "the full settings (overlap 0.5, whole grid, fp32) with the fast ones (overlap 0.25, crop, "
            "air skipping, bf16) on abdominal phantom CTs padded with air."
        )
        summary.append(
            ["Dice loss of the fast settings on phantoms", "<= 1 point", "not measured", "pending"]
        )
    else:
        dice_rows = [
            [k, f"{v:.4f}", f"{dice['minus_reference_points'][k]:+.2f}"] for k, v in dice["mean_dice"].items()
        ]
        no_crop = dice["minus_reference_points"].get("full@0.5")
        crop_note = (
            f" Without the body crop (`full@0.5`, the whole air-padded grid) the demo model loses "
            f"{-no_crop:.1f} points: it was trained on body-cropped cases and produces false positives "
            "in large air regions, so the crop the `Predictor` already does is needed for accuracy, not "
            "only for speed."
            if no_crop is not None and no_crop < -1.0
            else ""
        )
        layout = dice.get("window_layout_first_case", {})
        a, b = layout.get("crop@0.25"), layout.get("crop@0.5")
        overlap_note = (
            " On these small phantom grids (first case: "
            + "x".join(map(str, a["grid"]))
            + f" after the crop) overlaps 0.25 and 0.5 place the same {a['windows']} windows, so the "
            "overlap's effect on Dice is not tested by them."
            if a and b and a["starts"] == b["starts"]
            else ""
        )
        dice_text = (
            f"Dice on {dice['cases']} abdominal phantom CTs (1.5 mm, padded with air to emulate a larger field of view), "
            f"checkpoint `{dice['checkpoint']}` (the demo's trained `tiny` model: the base model is untrained, "
            f"so Dice is measured on this model; its own roi {dice['roi']}^3). Reference: `{dice['reference']}`, "
            "what the library's `Predictor` does (body crop, overlap 0.5, fp32).\n\n"
            f"{table(['setting@overlap', 'mean Dice', 'points vs reference'], dice_rows)}\n\n"
            f"The fastest setting (`{dice['fast']}`) differs from the reference by "
            f"{dice['fast_minus_full_points']:+.2f} Dice points.{overlap_note}{crop_note}"
        )
        summary.append(
            [
                f"Dice change of the fastest setting ({dice['fast']}) vs the library's (tiny demo model, phantoms)",
                ">= -1 point",
                f"{dice['fast_minus_full_points']:+.2f}",
                "met" if dice["fast_minus_full_points"] >= -1.0 else "**missed**",
            ]
        )
    return f"""## 3. CPU time per volume (`bench_volume.py`)

A synthetic CT of {"x".join(map(str, t["shape"]))} voxels at {t["spacing_mm"]} mm (an adult-sized body of 300 x 220 mm
over the whole scan length), `{t["preset"]}` preset (untrained weights: the cost does not depend on them),
K = {t["targets"]} targets, roi {t["roi"]}^3 (the universal config's patch), window batch {t["sw_batch_size"]}.
Timed: `condition` + Gaussian sliding windows + sigmoid/threshold on the 1.5 mm grid (+ the body mask
and crop where used); file reading, resampling and writing are not included. Each setting was run
**once** ({t["repeats"]} repeat: a volume takes minutes on this machine); nothing is extrapolated. "CPU s"
is the process's user + system CPU time (on an idle machine with 2 threads, wall >= CPU / 2).

{table(["setting@overlap", "grid", "windows run", "wall s", "CPU s", "peak RSS MB", "load"], rows)}

Window counts of every setting (exact; "windows run" excludes windows with no body voxel):

{table(["setting@overlap", "grid", "windows", "windows run"], counts)}

{dice_text}

{provenance(d)}
"""


def section_flops(d: dict[str, Any] | None, summary: list[list[str]]) -> str:
    if d is None:
        return "## 4. Achieved FLOP/s\n\nNot run yet (`python benchmarks/bench_flops.py`).\n"
    rows = []
    ratios = ", ".join(f"{r['preset']} {r['flops']['forward_ratio_vs_plain']:.3f}" for r in d["results"])
    worst = max(r["flops"]["forward_ratio_vs_plain"] for r in d["results"])
    summary.append(
        [
            "forward FLOPs: DuPLUS / own backbone, no conditioning (load-independent)",
            "<= 1.05",
            ratios,
            two_level(worst, 1.05, 1.10),
        ]
    )
    for r in d["results"]:
        f = r["flops"]
        rows.append(
            [
                r["preset"],
                f"{f['forward']['duplus'] / 1e9:.1f}",
                r["forward_median_s"],
                f"{r['forward_gflops']:.1f}",
                f"{r['gemm_gflops_median']:.1f} (max {r['gemm_gflops_max']:.1f})",
                f"{100 * r['fraction_of_gemm']:.0f}%",
                f"{f['forward_ratio_vs_dynunet']:.3f}",
                f"{f['forward_ratio_vs_plain']:.3f}",
                f"{f['train_ratio_vs_dynunet']:.3f}" if "train_ratio_vs_dynunet" in f else "-",
                load_str(r["load_before"], r["load_after"]),
            ]
        )
    r0 = d["results"][0]
    return f"""## 4. Achieved FLOP/s (`bench_flops.py`)

One forward of batch {r0["batch"]} at {r0["patch"]}^3 with K = {r0["targets"]}; FLOPs by
`torch.utils.flop_counter.FlopCounterMode` (convolutions and matrix products only: normalisation,
activations, FiLM and the sliding-window blend count zero). GEMM peak: fp32 `matmul` of
{d["gemm"]["n"]}^2 matrices, {d["gemm"]["iters"]} per burst, interleaved with the forwards. The FLOP
ratios against the peers are load-independent.

{table(["preset", "GFLOP / forward", "forward s", "achieved GFLOP/s", "GEMM GFLOP/s", "of GEMM", "FLOPs / DynUNet", "FLOPs / plain", "train-step FLOPs / DynUNet", "load"], rows)}

{provenance(d)}
"""


def section_text(d: dict[str, Any] | None, summary: list[list[str]]) -> str:
    if d is None:
        return "## 5. Text encoder\n\nNot run yet (`python benchmarks/bench_text.py`).\n"
    tr, lat = d["training"], d["latency"]
    per_step = tr["per_step_encoder_calls"]
    summary.append(
        [
            "text-encoder forward calls per training step after warm-up",
            "0",
            f"{max(per_step) if per_step else 'n/a'} (run total {tr['run_encoder_calls_after_warmup']})",
            "met"
            if per_step and max(per_step) == 0 and tr["run_encoder_calls_after_warmup"] == 0
            else "**missed**",
        ]
    )
    sizes = [k for k in lat if k.isdigit()]
    rows = [
        [n, lat[n]["encode_ms"], lat[n]["cached_ms"], f"{lat[n]['encode_ms'] / lat[n]['cached_ms']:.0f}x"]
        for n in sizes
    ]
    return f"""## 5. Text encoder (`bench_text.py`)

A tiny phantom training run (`Trainer`, `tiny` preset, 32^3 patches, {tr["iterations"]} steps, T2 paraphrases
sampled every step): the warm-up encoded {tr["warmup_prompts_cached"]} prompts in {tr["warmup_encoder_calls"]}
encoder call(s); encoder calls per training step afterwards: {per_step}; over the whole run after warm-up,
validation included: {tr["run_encoder_calls_after_warmup"]} (cache hits {tr["cache_hits"]}, misses {tr["cache_misses"]}).

Latency of `TextEncoder` ({lat["encoder"]}, E = {lat["embed_dim"]}) for distinct prompts, and of
`EmbeddingCache.get` for the same prompts once cached (medians, interleaved;
load {load_str(lat["load_before"], lat["load_after"])}):

{table(["prompts", "encode ms", "cached lookup ms", "speed-up"], rows)}

{provenance(d)}
"""


def section_gpu(d: dict[str, Any] | None, dry: dict[str, Any] | None, summary: list[list[str]]) -> str:
    if d is None or d.get("machine", {}).get("dry_run"):
        dry_note = (
            f"The script was checked on the CPU with `--dry-run` (tiny sizes) on {dry['written']}: it ran to the end."
            if dry
            else "Its `--dry-run` has not been run here yet."
        )
        summary.append(
            ["GPU: training patches/s, seconds per volume (H200)", "-", "pending a lent device", "pending"]
        )
        return f"""## 6. GPU (`gpu_h200.py`): results pending a lent device

No GPU was available in this session. `python benchmarks/gpu_h200.py` measures, in under 5 minutes
on an H200: training patches/s of the `base` preset at 128^3, batch 2, bf16 autocast (DuPLUS and the
DynUNet peer, alternating blocks of steps, peak memory), and seconds per 224 x 224 x 160 volume at
overlaps 0.5 and 0.25 with 10 targets (and 1), roi 128^3, window batch 4, bf16. {dry_note}
"""
    tr, vol = d.get("train", {}), d.get("volume", {})
    return f"""## 6. GPU (`gpu_h200.py`)

Device: {d["machine"]["device"]}, torch {d["machine"]["torch"]}, CUDA {d["machine"]["cuda"]}.

```json
{json.dumps({"train": tr, "volume": vol}, indent=1)}
```
"""


ANALYSIS = """## Why targets are missed, and the plan

**Conditioning overhead against DynUNet.** Two different costs add up in `DuPLUS / DynUNet`:

1. *The backbone is not DynUNet's* (`plain / DynUNet` > 1, with no conditioning at all): DuPLUS
   has a modality stem (`Conv3d(1, f0, 3)` + norm + act at full resolution) in front of a first
   stage whose residual block is `f0 -> f0`, where DynUNet's first block reads the image directly;
   its decoder blocks are residual (an extra 1x1x1 conv + norm per block, full resolution at the
   last level) where DynUNet's are plain; and it projects to 8 channels for the head. At the tiny
   and small widths most of the time is spent at full resolution, where these extra layers cost the
   most. For `base` DuPLUS also has two residual blocks per encoder stage (DynUNet has one), so
   DynUNet is not an equal-backbone peer there at all. Plan: hold the conditioning target against
   the `plain` peer (the same backbone without prompts), and report `plain / DynUNet` as the cost of
   the backbone design, which is a modelling choice (stems per modality, residual decoder) and not
   overhead of the prompts.
2. *The price of the prompts* (`duplus / plain`): in inference it is mostly the dynamic head. K
   per-target `8 -> 8 -> 8 -> 1` stacks evaluated over the whole window at once wrote and read
   `K x 17` full-size channels: memory-bound work whose FLOPs are a few per cent of the network's
   (section 4: DuPLUS / plain FLOPs) but whose time was not. `DynamicHead.run_heads` now evaluates
   them over chunks of 4096 voxels (32768 with autograd) so the intermediates stay in cache; the
   re-measured section 1 puts DuPLUS / plain at 1.15-1.18 for `tiny` and 1.03 (training) / 1.12
   (inference) for `small`, still above the 1.10 bar for three of the four rows. What remains is
   FiLM's elementwise pass after every norm and the head's per-window image context; at the tiny
   widths these run at full resolution next to very cheap convolutions, so they weigh most there.
   `bench_attribution.py` (section 1b, measured before the chunking) found FiLM's share within the
   noise and fusing it into one `addcmul` (`duplus_fused`) no measurable gain; re-running it with
   the chunked head, with more rounds on a quiet machine or the lent GPU, is the next step before
   more work on the training side.

**Target scaling.** With the former whole-window head, every extra target added its full-size
intermediates, so the time grew with K much faster than the FLOPs (10 targets cost 1.84x one for
`tiny`, 1.28x for `small`); with the chunked head the time follows the FLOPs closely (section 2:
1.11x and 1.06x, within the design's 1.2x).

{volume_analysis}

## Suggested library changes (not made here: benchmarks only)

Landed since:

- `DynamicHead.run_heads` evaluates the per-target stacks over chunks of voxels (4096 without
  autograd, 32768 with; ReLU in place without autograd).
- `duplus.models.blocks.Conv3d` runs batch-of-one CPU float32 convolutions on oneDNN
  (`aten.mkldnn_convolution`). PyTorch's heuristic sent those whose `N*C*D*H` is small (the
  low-resolution layers of the tiny/small presets, and every layer of a batch-1 window) to its
  im2col path, ~7-12x slower; the tiny model's 48^3 batch-1 forward went from 0.306 s to 0.078 s.
  Autograd keeps PyTorch's own backward, so batch-1 *training* steps are still slow: train with
  batches >= 2. The tables above predate this change except where their date says otherwise.

1. `predict_volume_logits` / `Predictor`: skip windows without body voxels (`with_coord=True`
   predictor as in `bench_volume.py: AirSkippingPredictor`; the body mask is already computed for
   the crop) and offer `bf16` autocast on the CPU (`torch.autocast("cpu", torch.bfloat16)`), with
   a phantom Dice check in the tests.
2. Keep the body crop on by default (`PreprocessConfig.crop_foreground`): section 3 shows that the
   demo model, trained on body-cropped cases, loses tens of Dice points on an uncropped air-padded
   grid; a test on an air-padded phantom would guard it.
3. `EmbeddingCache.get`: `TextEncoder.is_trainable` walks every parameter on each call; cache the
   flag (it changes only in `set_trainable` / when LoRA is applied). Negligible next to a step.
"""


def volume_analysis(flops: dict[str, Any] | None, volume: dict[str, Any] | None) -> str:
    """The arithmetic behind the time-per-volume stretch goal, from the stored results."""
    head = "**Time per volume (stretch goal).** "
    if flops is None or volume is None:
        return head + "Needs the results of `bench_flops.py` and `bench_volume.py`."
    base = next((r for r in flops["results"] if r["preset"] == volume["timing"]["preset"]), None)
    if base is None:
        return head + f"`bench_flops.py` has no `{volume['timing']['preset']}` row."
    t = volume["timing"]
    per_voxel = base["flops"]["forward"]["duplus"] / (base["batch"] * base["patch"] ** 3)
    fastest = min(t["measured"], key=lambda m: m["wall_s"]) if t["measured"] else None
    windows = fastest["windows_run"] if fastest else t["window_counts"]["full@0.25"]["windows_run"]
    total = per_voxel * windows * t["roi"] ** 3
    return (
        head + f"The `{t['preset']}` network costs {per_voxel / 1e3:.0f} kFLOP per voxel (section 4); "
        f"{windows} windows of {t['roi']}^3 (the fewest of any setting at overlap 0.25) are "
        f"{total / 1e12:.1f} TFLOP per volume, so 60 s needs {total / 60 / 1e9:.0f} GFLOP/s sustained: "
        f"{total / 60 / 1e9 / base['gemm_gflops_median']:.1f}x the fp32 GEMM rate measured on this shared machine "
        f"({base['gemm_gflops_median']:.0f} GFLOP/s, load {base['load_before'][0]:.1f}), and the network reached "
        f"{100 * base['fraction_of_gemm']:.0f}% of that rate. Cropping to the body and skipping air windows "
        "only help when the body leaves whole windows empty: an adult abdomen fills a 336 mm field of view, "
        "so at roi 128^3 and overlap 0.25 the crop keeps the same number of windows (it saves a third at "
        "overlap 0.5), and no window is pure air; a head, a neck or a limb would gain more. bf16 autocast "
        "on this AVX-512-BF16 CPU is the largest single lever measured. Whether an idle 2-core machine "
        "reaches 60 s with bf16 could not be measured here. Plan: bf16 CPU inference (with the phantom Dice "
        "check above), overlap 0.25 on the CPU, and for the remaining factor either a lighter CPU preset "
        "or a coarse-to-fine pass (a 3 mm pass to find the targets' region, 1.5 mm windows only there)."
    )


def write_doc() -> Path:
    summary: list[list[str]] = []
    overhead, targets, volume = load("overhead"), load("targets"), load("volume")
    base = load("overhead_base")
    if overhead is not None and base is not None:  # the base-preset window forward, run on its own
        known = {r["preset"] for r in overhead["results"]}
        overhead["results"] += [r for r in base["results"] if r["preset"] not in known]
        overhead["base_note"] = provenance(base)
    flops, text, gpu, dry = load("flops"), load("text"), load("gpu_h200"), load("gpu_h200_dryrun")
    body = [
        section_overhead(overhead, summary),
        section_attribution(load("attribution")),
        section_targets(targets, summary),
        section_volume(volume, summary),
        section_flops(flops, summary),
        section_text(text, summary),
        section_gpu(gpu, dry, summary),
    ]
    machine = next((d["machine"] for d in (overhead, targets, volume, flops, text) if d), None)
    machine_line = (
        f"CPU: {machine['cpu']} ({machine['cores_visible']} cores visible, shared with other jobs), "
        f"torch {machine['torch']}, Python {machine['python']}."
        if machine
        else ""
    )
    doc = f"""# Performance

_Generated by `benchmarks/run_all.py` (`benchmarks/perf_doc.py`) from `benchmarks/results/*.json`; edit the generator, not this file._

The numbers we hold ourselves to, measured by the scripts in `benchmarks/`
(run by hand or `make bench`; not in CI). {machine_line}

**How these were measured.** The machine is shared and was heavily loaded (load averages are
printed next to every table; a load of 8 on 2 cores means this process got roughly a quarter of
the machine), so absolute seconds are pessimistic and noisy. Every comparison therefore runs its
variants *interleaved in one process* (A, B, C, then C, B, A, ...), so that load drifts hit all of
them alike, and reports medians and the median of the per-round ratios. Every process runs with
`OMP_WAIT_POLICY=PASSIVE` (idle OpenMP threads otherwise spin and skew timings several-fold) and
`torch.set_num_threads(2)`.

## Summary

{table(["what", "target", "measured", "verdict"], summary)}

{chr(10).join(body)}
{ANALYSIS.format(volume_analysis=volume_analysis(flops, volume))}
## Reproduce

```bash
make bench                                   # = python benchmarks/run_all.py (all CPU benchmarks + this file)
python benchmarks/run_all.py --quick         # every script with --quick
python benchmarks/run_all.py --doc-only      # rewrite this file from benchmarks/results/*.json
python benchmarks/bench_overhead.py --with-base   # + base preset, one 96^3 window forward
python benchmarks/bench_volume.py --all           # every setting at overlaps 0.25 and 0.5 (long)
python benchmarks/gpu_h200.py                # on a CUDA machine (H200: < 5 min)
```
"""
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(doc)
    print(f"wrote {DOC}")
    return DOC

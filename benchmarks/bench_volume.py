"""CPU time per volume: one 224 x 224 x 160 CT at 1.5 mm, ``base`` preset, 10 targets, 2 threads.

The segmentation stage is timed from the normalised 1.5 mm image to the thresholded K masks on
the full grid: ``condition`` once, Gaussian sliding windows (roi 128^3, the universal config's),
sigmoid, threshold (and, for the crop settings, the body mask and the crop). Reading, resampling
and writing files are not included. Settings, implemented here to test the ideas (the library is
not changed):

* ``full``: the whole grid, every window (:func:`duplus.inference.sliding.predict_volume_logits`).
* ``skip``: windows without a single body voxel are not run; they contribute a constant
  background logit to the Gaussian blend (MONAI ``with_coord`` gives each window's position).
* ``crop``: the grid is cropped to the body mask's bounding box + 6 mm (what
  ``duplus.data.preprocess`` already does for the ``Predictor``), predicted, pasted back.
* ``bf16``: ``torch.autocast("cpu", bfloat16)`` around the network (AVX-512 BF16 CPUs).
* combinations: ``crop+skip``, ``crop+skip+bf16``.

Each measured setting runs once (one volume takes minutes here), with the wall and CPU seconds and
the process's peak RSS while it ran; the number of windows of every setting is exact and listed
for all of them. With a trained checkpoint (default ``runs/demo/train/checkpoint_best.pt``) the
Dice of several settings is compared on phantom CTs placed in a larger air field, against the
library's own behaviour (body crop, overlap 0.5, fp32).

    python benchmarks/bench_volume.py              # base: full and crop+skip+bf16 at overlap 0.25
    python benchmarks/bench_volume.py --all        # every setting at overlaps 0.25 and 0.5 (long)
    python benchmarks/bench_volume.py --quick      # tiny preset, roi 64: checks the mechanics
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _env  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)
import numpy as np
import torch
from common import (
    RESULTS_DIR,
    ROOT,
    PeakRSS,
    format_table,
    load_average,
    machine_info,
    make_embeddings,
    rounded,
    setup_threads,
    time_call,
    write_result,
)
from monai.inferers import sliding_window_inference
from peers import build_duplus

from duplus.config import PreprocessConfig
from duplus.data.preprocess import compute_body_mask, normalise_intensity
from duplus.inference.sliding import predict_volume_logits
from duplus.models.duplus import DuPLUS, PromptConditioning

SETTINGS: dict[str, dict[str, bool]] = {
    "full": {"crop": False, "skip": False, "bf16": False},
    "skip": {"crop": False, "skip": True, "bf16": False},
    "crop": {"crop": True, "skip": False, "bf16": False},
    "crop+skip": {"crop": True, "skip": True, "bf16": False},
    "bf16": {"crop": False, "skip": False, "bf16": True},
    "crop+skip+bf16": {"crop": True, "skip": True, "bf16": True},
}
AIR_LOGIT = -20.0
DEFAULT_CHECKPOINT = ROOT / "runs" / "demo" / "train" / "checkpoint_best.pt"


# ----------------------------------------------------------------------------------- the volume
def synthetic_abdomen_hu(shape: Sequence[int], spacing: float = 1.5, seed: int = 0) -> np.ndarray:
    """A CT-like abdomen in HU, ``(I, J, K)``: an adult-sized elliptic body (300 x 220 mm, the full
    length of the scan) of fat and soft tissue with a few organ-like blobs, in air."""
    rng = np.random.default_rng(seed)
    ni, nj, nk = (int(s) for s in shape)
    x = (np.arange(ni) - (ni - 1) / 2) * spacing
    y = (np.arange(nj) - (nj - 1) / 2) * spacing
    z = (np.arange(nk) - (nk - 1) / 2) * spacing
    xx, yy = np.meshgrid(x, y, indexing="ij")
    body2d = (xx / 150.0) ** 2 + (yy / 110.0) ** 2 <= 1.0
    inner2d = (xx / 135.0) ** 2 + (yy / 95.0) ** 2 <= 1.0
    hu = np.full((ni, nj, nk), -1000.0, dtype=np.float32)
    hu[body2d] = -100.0  # fat
    hu[inner2d] = 40.0  # soft tissue
    for cx, cy, cz, r, v in [(-60, 10, 20, 70, 60.0), (80, 20, 30, 45, 50.0), (0, -60, 0, 25, 400.0)]:
        blob = (
            (x[:, None, None] - cx) ** 2 + (y[None, :, None] - cy) ** 2 + (z[None, None] - cz) ** 2
        ) < r**2
        hu[blob & body2d[..., None]] = v
    hu += rng.normal(0.0, 15.0, hu.shape).astype(np.float32)
    return hu


def crop_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """Bounding box of ``mask`` grown by ``margin`` voxels (the whole grid if it is empty)."""
    if not mask.any():
        return tuple(slice(0, s) for s in mask.shape)
    box = []
    for ax in range(3):
        idx = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))
        box.append(slice(max(0, int(idx[0]) - margin), min(mask.shape[ax], int(idx[-1]) + 1 + margin)))
    return tuple(box)


def window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Window start positions along one axis, as MONAI's ``sliding_window_inference`` places them."""
    if size <= roi:
        return [0]
    step = roi if size == roi else max(int(roi * (1 - overlap)), 1)
    n = math.ceil((size - roi) / step) + 1
    return [min(i * step, size - roi) for i in range(n)]


def count_windows(mask: np.ndarray, roi: int, overlap: float) -> tuple[int, int]:
    """(windows, windows holding at least one body voxel) over ``mask``'s grid."""
    starts = [window_starts(s, roi, overlap) for s in mask.shape]
    total = run = 0
    for i in starts[0]:
        for j in starts[1]:
            for k in starts[2]:
                total += 1
                run += bool(mask[i : i + roi, j : j + roi, k : k + roi].any())
    return total, run


# ----------------------------------------------------------------------------------- prediction
class AirSkippingPredictor:
    """Predictor for MONAI ``sliding_window_inference(..., with_coord=True)``: runs the network only
    on windows holding body voxels; the others get :data:`AIR_LOGIT` everywhere."""

    def __init__(self, model: DuPLUS, body: torch.Tensor, bf16: bool) -> None:
        self.model = model
        self.body = body  # (D, H, W) bool on the predicted grid
        self.bf16 = bf16
        self.windows = 0
        self.skipped = 0

    def __call__(self, window: torch.Tensor, coords: list, cond: PromptConditioning) -> torch.Tensor:
        keep = [bool(self.body[tuple(c[2:])].any()) for c in coords]
        self.windows += len(keep)
        self.skipped += keep.count(False)
        out = window.new_full((window.shape[0], cond.num_targets, *window.shape[2:]), AIR_LOGIT)
        if any(keep):
            rows = torch.tensor([i for i, k in enumerate(keep) if k])
            out[rows] = run_network(self.model, window[rows], cond, self.bf16)
        return out


def run_network(model: DuPLUS, window: torch.Tensor, cond: PromptConditioning, bf16: bool) -> torch.Tensor:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return model.forward_conditioned(window, cond).float()


def segment(
    model: DuPLUS,
    image: np.ndarray,
    raw_hu: np.ndarray,
    t1: torch.Tensor,
    t2: torch.Tensor,
    *,
    roi: int,
    overlap: float,
    sw_batch_size: int,
    crop: bool,
    skip: bool,
    bf16: bool,
    margin: int,
) -> dict[str, Any]:
    """Masks ``(K, I, J, K)`` uint8 of one normalised CT ``image (I, J, K)`` and window counts."""
    body = compute_body_mask(raw_hu[None], "CT") if (crop or skip) else None
    box = crop_box(body, margin) if (crop and body is not None) else tuple(slice(0, s) for s in image.shape)
    sub = image[box]
    x = torch.zeros((1, 2, *sub.shape), dtype=torch.float32)
    x[0, 0] = torch.from_numpy(np.ascontiguousarray(sub))
    roi3 = (roi,) * 3
    with torch.no_grad():
        cond = model.condition(torch.zeros(1, dtype=torch.long), t1, t2)
        if skip:
            assert body is not None
            predictor = AirSkippingPredictor(model, torch.from_numpy(np.ascontiguousarray(body[box])), bf16)
            logits = sliding_window_inference(
                x,
                roi3,
                sw_batch_size,
                predictor,
                overlap=overlap,
                mode="gaussian",
                with_coord=True,
                cond=cond,
            )
            windows, skipped = predictor.windows, predictor.skipped
        elif bf16:
            logits = sliding_window_inference(
                x,
                roi3,
                sw_batch_size,
                lambda w, cond: run_network(model, w, cond, True),
                overlap=overlap,
                mode="gaussian",
                cond=cond,
            )
            windows, skipped = -1, 0
        else:  # the library path
            logits = predict_volume_logits(model, x, cond, roi3, overlap=overlap, sw_batch_size=sw_batch_size)
            windows, skipped = -1, 0
    masks = np.zeros((t2.shape[1], *image.shape), dtype=np.uint8)
    masks[(slice(None), *box)] = (logits[0] > 0).numpy().astype(np.uint8)  # sigmoid >= 0.5
    return {"masks": masks, "grid": list(sub.shape), "windows_seen": windows, "windows_skipped": skipped}


# ----------------------------------------------------------------------------------- timing
def time_settings(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(0)
    model = build_duplus(args.preset).eval()
    raw = synthetic_abdomen_hu(args.shape, args.spacing)
    image = normalise_intensity(raw[None], "CT", PreprocessConfig())[0]
    t1, t2 = make_embeddings(args.targets)
    margin = int(math.ceil(PreprocessConfig().crop_margin_mm / args.spacing))
    body = compute_body_mask(raw[None], "CT")
    cropped = body[crop_box(body, margin)]
    counts = {}
    for name, s in SETTINGS.items():
        grid = cropped if s["crop"] else body
        for ov in (0.25, 0.5):
            total, with_body = count_windows(grid, args.roi, ov)
            counts[f"{name}@{ov}"] = {
                "grid": list(grid.shape),
                "windows": total,
                "windows_run": with_body if s["skip"] else total,
            }
    measured = []
    for item in args.measure:
        name, ov = item.split("@")
        s = SETTINGS[name]
        print(f"  {item}: {counts[item]['windows_run']} windows of {args.roi}^3 ...", flush=True)
        load_before = load_average()
        with PeakRSS() as rss:
            holder: dict[str, Any] = {}

            def call(s: dict[str, bool] = s, ov: str = ov, holder: dict[str, Any] = holder) -> None:
                holder.update(
                    segment(
                        model,
                        image,
                        raw,
                        t1,
                        t2,
                        roi=args.roi,
                        overlap=float(ov),
                        sw_batch_size=args.sw_batch,
                        margin=margin,
                        **s,
                    )
                )

            sample = time_call(call)
        entry = {
            "setting": item,
            "wall_s": sample.wall,
            "cpu_s": sample.cpu,
            "peak_rss_mb": rss.peak_mb,
            "rss_before_mb": rss.start_mb,
            "grid": holder["grid"],
            "windows_run": counts[item]["windows_run"],
            "windows_skipped_observed": holder["windows_skipped"],
            "foreground_fraction": float(holder["masks"].mean()),
            "load_before": load_before,
            "load_after": load_average(),
        }
        print(
            f"    {sample.wall:.1f} s wall, {sample.cpu:.1f} s CPU, peak RSS {rss.peak_mb:.0f} MB "
            f"(load {entry['load_after'][0]:.1f})",
            flush=True,
        )
        measured.append(entry)
    return {
        "preset": args.preset,
        "shape": list(args.shape),
        "spacing_mm": args.spacing,
        "roi": args.roi,
        "sw_batch_size": args.sw_batch,
        "targets": args.targets,
        "repeats": 1,
        "window_counts": counts,
        "measured": measured,
    }


# ----------------------------------------------------------------------------------- Dice
def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    inter = float(np.logical_and(pred, ref).sum())
    denom = float(pred.sum() + ref.sum())
    return 1.0 if denom == 0 else 2.0 * inter / denom


def dice_check(checkpoint: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Dice of the full and the fast settings on abdominal phantom CTs (1.5 mm grid, padded with
    air to emulate a larger field of view), with a trained checkpoint."""
    from dataclasses import replace

    from duplus.data.io import Volume
    from duplus.data.phantoms import make_phantom_case, target_mask
    from duplus.data.preprocess import preprocess_case
    from duplus.inference.predictor import Predictor

    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    model = predictor.model.eval()
    cfg = replace(predictor.preprocess, crop_foreground=False)
    roi = int(predictor.patch_size[0])
    spacing = float(cfg.spacing[0])
    margin = int(math.ceil(PreprocessConfig().crop_margin_mm / spacing))
    known = set(predictor.label_space.targets) if predictor.label_space is not None else set()
    # reference: what the library's Predictor does (body crop, overlap 0.5, fp32); fastest last
    compare = ["crop@0.5", "full@0.5", "crop@0.25", "crop+skip@0.25", "crop+skip+bf16@0.25"]
    reference, fast = compare[0], compare[-1]
    scores: dict[str, dict[str, list[float]]] = {k: {} for k in compare}
    layout: dict[str, Any] = {}  # first case: grid and window starts of each setting
    for i in range(args.dice_cases):
        case = make_phantom_case(10_000 + i, "abdomen", "CT", shape=96)
        targets = [n for n in case.label_names.values() if n in known] or list(case.label_names.values())
        pre = preprocess_case(
            Volume(case.image[None], case.affine), Volume(case.label[None], case.affine), "CT", cfg
        )
        pad = [(0, 0), (args.dice_pad, args.dice_pad), (args.dice_pad, args.dice_pad), (0, 0)]
        img = np.pad(pre.image, pad, constant_values=-1.0)[0]  # normalised air
        lo, hi = (float(v) for v in cfg.ct_window)
        raw = ((img + 1.0) / 2.0 * (hi - lo) + lo).astype(np.float32)  # back to HU, for the body mask
        lab = np.pad(pre.label, pad[1:], constant_values=0)
        t1, t2, _ = predictor.encode_prompts("CT", "abdomen", targets)
        for key in compare:
            setting, ov = key.split("@")
            out = segment(
                model,
                img,
                raw,
                t1,
                t2,
                roi=roi,
                overlap=float(ov),
                sw_batch_size=args.sw_batch,
                margin=margin,
                **SETTINGS[setting],
            )
            if i == 0:
                starts = [window_starts(n, roi, float(ov)) for n in out["grid"]]
                layout[key] = {
                    "grid": out["grid"],
                    "windows": math.prod(len(st) for st in starts),
                    "starts": starts,
                }
            for k, t in enumerate(targets):
                ref = target_mask(lab, case.label_names, t)
                scores[key].setdefault(t, []).append(dice(out["masks"][k].astype(bool), ref))
    mean = {key: float(np.mean([np.mean(v) for v in s.values()])) for key, s in scores.items()}
    return {
        "checkpoint": str(checkpoint),
        "cases": args.dice_cases,
        "roi": roi,
        "reference": reference,
        "fast": fast,
        "per_target": {k: {t: float(np.mean(v)) for t, v in s.items()} for k, s in scores.items()},
        "window_layout_first_case": layout,
        "mean_dice": mean,
        "minus_reference_points": {k: 100.0 * (v - mean[reference]) for k, v in mean.items()},
        "fast_minus_full_points": 100.0 * (mean[fast] - mean[reference]),
    }


def dice_only(args: argparse.Namespace) -> dict[str, Any]:
    """Run the Dice part alone and store it in ``results/<name>.json`` (keeping its timings)."""
    if not args.checkpoint.is_file():
        raise SystemExit(f"no trained checkpoint at {args.checkpoint}")
    path = RESULTS_DIR / f"{args.name}.json"
    payload = json.loads(path.read_text()) if path.is_file() else {"machine": machine_info(args.threads)}
    for key in ("benchmark", "written", "run_seconds"):
        payload.pop(key, None)
    payload.setdefault("load_start", load_average())
    payload["dice"] = dice_check(args.checkpoint, args)
    payload["dice"]["load_after"] = load_average()
    payload.setdefault("load_end", load_average())
    print(json.dumps(rounded(payload["dice"]["mean_dice"]), indent=1))
    print(f"fastest - reference = {payload['dice']['fast_minus_full_points']:+.2f} Dice points")
    write_result(args.name, rounded(payload))
    return payload


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="base")
    p.add_argument("--shape", type=int, nargs=3, default=[224, 224, 160])
    p.add_argument("--spacing", type=float, default=1.5)
    p.add_argument("--roi", type=int, default=128)
    p.add_argument("--sw-batch", type=int, default=2)
    p.add_argument("--targets", type=int, default=10)
    p.add_argument(
        "--measure", nargs="+", default=["full@0.25", "crop+skip+bf16@0.25"], help="SETTING@OVERLAP"
    )
    p.add_argument("--all", action="store_true", help="measure every setting at overlaps 0.25 and 0.5")
    p.add_argument(
        "--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="trained model for the Dice part"
    )
    p.add_argument("--dice-cases", type=int, default=5)
    p.add_argument("--dice-pad", type=int, default=24, help="air voxels added on each in-plane side")
    p.add_argument(
        "--dice-only", action="store_true", help="only the Dice part, into the existing results file"
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="tiny preset, roi 64")
    p.add_argument("--name", default="volume", help="results/<name>.json")
    args = p.parse_args(argv)
    if args.quick:
        args.preset, args.roi = "tiny", 64
    if args.all:
        args.measure = [f"{n}@{o}" for o in (0.25, 0.5) for n in SETTINGS]
    for item in args.measure:
        name, _, ov = item.partition("@")
        if name not in SETTINGS or ov not in ("0.25", "0.5"):
            p.error(f"--measure {item!r}: expected one of {', '.join(SETTINGS)} @0.25 or @0.5")
    setup_threads(args.threads)
    if args.dice_only:
        return dice_only(args)
    load0 = load_average()
    print(
        f"== {args.preset}: {args.shape} at {args.spacing} mm, roi {args.roi}, K={args.targets}", flush=True
    )
    timing = time_settings(args)
    rows = [
        [
            m["setting"],
            "x".join(map(str, m["grid"])),
            m["windows_run"],
            m["wall_s"],
            m["cpu_s"],
            f"{m['peak_rss_mb']:.0f}",
            f"{m['load_before'][0]:.1f}->{m['load_after'][0]:.1f}",
        ]
        for m in timing["measured"]
    ]
    print(format_table(["setting", "grid", "windows", "wall s", "CPU s", "peak RSS MB", "load"], rows))
    counts = [
        [k, "x".join(map(str, v["grid"])), v["windows"], v["windows_run"]]
        for k, v in timing["window_counts"].items()
    ]
    print(format_table(["setting", "grid", "windows", "windows run"], counts))
    dice_result: dict[str, Any] = {"skipped": f"no trained checkpoint at {args.checkpoint}"}
    if args.checkpoint.is_file():
        print(f"== Dice, full vs fast settings, checkpoint {args.checkpoint}", flush=True)
        dice_result = dice_check(args.checkpoint, args)
        print(f"mean Dice {rounded(dice_result['mean_dice'])}")
        print(f"fastest - reference = {dice_result['fast_minus_full_points']:+.2f} Dice points")
    else:
        print(f"Dice part skipped: {dice_result['skipped']}")
    payload = {
        "machine": machine_info(args.threads),
        "load_start": load0,
        "load_end": load_average(),
        "quick": args.quick,
        "timing": timing,
        "dice": dice_result,
    }
    write_result(args.name, rounded(payload))
    return payload


if __name__ == "__main__":
    main()

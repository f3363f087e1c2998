"""A brain model trained on synthetic heads, on real images it never saw (issue 28, items 3-4).

The model (a checkpoint, run folder, ``.duplus`` bundle or installed name) segments, through the
public :func:`duplus.segment` with ``modality="MRI"``, ``region="head"`` and the targets "grey
matter", "white matter", "cerebrospinal fluid":

1. the real MNI152 2009 T1 at 2 mm. Its reference labels come from nilearn's GM/WM probability maps
   by the generator's own rule (:mod:`duplus.data.phantoms.real_head`); training saw only those
   maps, deformed, never this image's intensities;
2. the same image with inverted contrast (``max - T1`` inside the brain outline: T2-like);
3. the T1 resampled to LSA orientation with 1 x 1 x 3 mm voxels (masks must carry exactly that
   grid; Dice against the reference resampled the same way, nearest-neighbour);
4. qualitatively: nibabel's shipped ``anatomical.nii`` and scikit-image's ``data.brain()`` (when
   installed and available offline).

For 1-3 it counts mask voxels outside the brain outline (on scalp, skull or air). It writes
``benchmarks/results/real_brain.json``, overlays in ``docs/figures/real_brain_*.png`` and
``docs/REAL_DATA.md`` (tables read from the JSON)::

    python benchmarks/real_brain.py runs/brain/checkpoint_last.pt --training "4000 steps, 95 min on 2 cores"
    python benchmarks/real_brain.py --doc-only      # rewrite docs/REAL_DATA.md from the JSON
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import _env  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)
import nibabel as nib
import numpy as np
from common import machine_info, rounded, setup_threads, write_result

import duplus
from duplus.checkpoint import load_checkpoint
from duplus.data.phantoms.real_head import (
    RealHead,
    invert_contrast,
    load_mni152_reference,
    reoriented_grid,
    resample_reference,
)
from duplus.fileio import write_text_atomic
from duplus.reporting.overlays import save_overlay

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "real_brain.json"
DOC = ROOT / "docs" / "REAL_DATA.md"
FIGURES = ROOT / "docs" / "figures"
TARGETS = ["grey matter", "white matter", "cerebrospinal fluid"]
BARS = {("mni152_t1", "white matter"): 0.85, ("mni152_t1", "grey matter"): 0.75}
BARS[("mni152_inverted", "white matter")] = 0.75
REPRODUCE = """## Training and reproducing

The budget of `configs/brain_synth.yaml` is its `iterations` key: 10000 steps of 2 patches of
48^3 voxels at 2 mm, `tiny` preset, on the synthetic heads only (60 min on 2 cores). To train,
evaluate and package:

```bash
duplus make-phantoms data/synth --anatomy mni152 --cases 200 --test-cases 20 --workers 2
duplus train --config configs/brain_synth.yaml --out runs/brain
python benchmarks/real_brain.py runs/brain/checkpoint_best.pt --label result --training "10000 steps, N min on 2 cores"
duplus export -c runs/brain -o brain-tissue.duplus --name brain-tissue
duplus import brain-tissue.duplus
duplus segment -i t1.nii.gz -o seg -c brain-tissue --modality MRI --region head \\
    --targets "grey matter" "white matter" "cerebrospinal fluid"
```

Settings of `configs/brain_synth.yaml` and why: the `tiny` preset and 2 mm voxels (the CPU
budget; the synthetic heads are written at 2 mm, 96 x 112 x 96); patches of 48^3 (half a
head's width at 2 mm; a larger patch costs about as much more per step); `head_position: false`
and no mirroring (the defaults: the three tissues lie on both sides, so left and right need not be
told apart; neither was tried); `val_fraction: 0.1` of the synthetic cases for validation, 4 of
them scored every 1000 steps. None was tuned on the real image. Two full runs were made: 4000
steps (white matter 0.662, grey matter 0.771, inverted white matter 0.713 on the real T1), then,
because its synthetic validation Dice was still rising, 10000 steps with the same data: the
result above, the best checkpoint by mean Dice on the synthetic validation cases (step 9000:
0.838 white matter, 0.836 grey matter, 0.708 CSF; 0.7171 over all seven labels, against 0.7168 at
step 10000). Only the step count and the validation cases scored (2 -> 4) differ between the runs.

The mask voxels outside the brain outline are nearly all CSF, in a band at most a few mm wide
around the outline: the MNI152 T1 is skull-stripped, so outside its brain the image is zero,
as dark as CSF on a T1, where a real head has CSF, meninges and then bone. The grey and white
matter masks stay inside it. The issue's check (a test on the LSA image: at most 0.5 % of the mask
voxels outside the outline) still fails on the CSF band, so the model is not packaged.

The real MNI152 T1 above is the test image of the issue's acceptance; no setting is to be chosen
on it. Choose settings on the synthetic validation cases only. `duplus demo` adds a section with
this measurement when a model named `brain-tissue` is installed (`duplus import`), and otherwise
says that it is not packaged.
""".splitlines()


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of two boolean masks (1.0 when both are empty)."""
    total = int(pred.sum()) + int(ref.sum())
    return 1.0 if total == 0 else 2.0 * float((pred & ref).sum()) / total


def farthest_outside_mm(mask: np.ndarray, head: RealHead) -> float:
    """How far (mm) the mask's farthest voxel outside the brain outline lies from it; 0 when none is
    outside. A thin band next to the outline is where a real head has CSF and meninges; scalp and
    skull lie farther out."""
    from scipy import ndimage

    outside = mask & ~head.outline
    if not outside.any():
        return 0.0
    spacing = [float(v) for v in np.linalg.norm(head.affine[:3, :3], axis=0)]
    distance = ndimage.distance_transform_edt(~head.outline, sampling=spacing)
    return round(float(distance[outside].max()), 2)


def evaluate_real(predictor: Any, name: str, head: RealHead) -> dict[str, Any]:
    """Segment one real head with a reference; Dice, geometry and voxels outside the outline."""
    start = time.perf_counter()
    result = duplus.segment(head.nifti(), TARGETS, modality="MRI", region="head", predictor=predictor)
    seconds = time.perf_counter() - start
    masks = {t: np.asarray(result.masks[t].dataobj) > 0 for t in TARGETS}
    first = result.masks[TARGETS[0]]
    row: dict[str, Any] = {
        "case": name,
        "shape": list(head.image.shape),
        "axcodes": "".join(nib.aff2axcodes(head.affine)),
        "voxel_mm": [float(v) for v in np.linalg.norm(head.affine[:3, :3], axis=0)],
        "same_grid": bool(first.shape == head.image.shape and np.array_equal(first.affine, head.affine)),
        "seconds": seconds,
        "dice": {t: dice(masks[t], head.target_mask(t)) for t in TARGETS},
        "outside_outline": {t: int((masks[t] & ~head.outline).sum()) for t in TARGETS},
        "outside_outline_max_mm": {t: farthest_outside_mm(masks[t], head) for t in TARGETS},
        "mask_voxels": {t: int(masks[t].sum()) for t in TARGETS},
        "outline_voxels": int(head.outline.sum()),
    }
    reference = np.stack([head.target_mask(t) for t in TARGETS])
    save_overlay(head.image, head.affine, np.stack([masks[t] for t in TARGETS]), TARGETS,
                 FIGURES / f"real_brain_{name}.png", title=f"{name}: predicted (fill), reference (contours)",
                 reference=reference)  # fmt: skip
    return row


def evaluate_qualitative(predictor: Any, name: str, image: nib.Nifti1Image) -> dict[str, Any]:
    """Segment a real image without a reference: mask sizes and an overlay only."""
    result = duplus.segment(image, TARGETS, modality="MRI", region="head", predictor=predictor)
    masks = np.stack([np.asarray(result.masks[t].dataobj) > 0 for t in TARGETS])
    data = np.asarray(image.dataobj, dtype=np.float32)
    save_overlay(data, image.affine, masks, TARGETS, FIGURES / f"real_brain_{name}.png", title=name)
    return {
        "case": name,
        "shape": list(image.shape),
        "same_grid": bool(result.masks[TARGETS[0]].shape == image.shape),
        "mask_voxels": {t: int(m.sum()) for t, m in zip(TARGETS, masks, strict=True)},
        "image_voxels": int(np.prod(image.shape)),
    }


SKIMAGE_BRAIN_NOTE = (
    "scikit-image's wheel (checked: 0.26.0) does not contain `brain.tiff`: `data.brain()` downloads it "
    "on first use, which this offline machine cannot do, so installing scikit-image would not help here."
)


def qualitative_images() -> tuple[dict[str, nib.Nifti1Image], dict[str, str]]:
    """The shipped real images found offline, and why any is missing."""
    import nibabel.testing

    images: dict[str, nib.Nifti1Image] = {}
    missing: dict[str, str] = {}
    anat = Path(nibabel.testing.data_path) / "anatomical.nii"
    images["nibabel_anatomical"] = nib.load(str(anat))  # type: ignore[assignment]
    try:
        from skimage import data

        brain = np.asarray(data.brain(), dtype=np.float32)  # (slices, rows, cols), spacing unknown
        images["skimage_brain"] = nib.Nifti1Image(
            np.transpose(brain, (2, 1, 0))[:, ::-1], np.diag([1, 1, 2, 1.0])
        )
    except Exception as exc:  # not installed, or its data not downloadable offline
        missing["skimage_brain"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return images, missing


def checkpoint_facts(checkpoint: str) -> dict[str, Any]:
    """What the model was trained on and for how long, as the checkpoint says."""
    from duplus.bundles.store import resolve_checkpoint

    data = load_checkpoint(resolve_checkpoint(checkpoint))
    config = data.get("train_config") or {}
    return {
        "checkpoint": str(checkpoint),
        "step": int(data.get("step", -1)),
        "preset": (data.get("model_config") or {}).get("preset"),
        "patch_size": data.get("patch_size"),
        "datasets": [d.get("name") for d in data.get("datasets", [])],
        "batch_size": config.get("batch_size"),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate the model on every real image; returns the JSON payload."""
    setup_threads(args.threads)
    predictor = duplus.load_predictor(args.checkpoint, device="cpu")
    head = load_mni152_reference(2)
    shape, affine = reoriented_grid(head.affine, head.image.shape, "LSA", (1.0, 1.0, 3.0))
    cases = {
        "mni152_t1": head,
        "mni152_inverted": invert_contrast(head),
        "mni152_t1_lsa_1x1x3": resample_reference(head, shape, affine),
    }
    rows = [evaluate_real(predictor, name, h) for name, h in cases.items()]
    images, missing = qualitative_images()
    qualitative = [evaluate_qualitative(predictor, name, img) for name, img in images.items()]
    return {
        "label": args.label,
        "training": args.training,
        "model": checkpoint_facts(args.checkpoint),
        "reference_rule": "inside the brain outline: largest of P(WM), P(GM), 1 - P(WM) - P(GM) (head_maps.py)",
        "bars": {f"{c}/{t}": v for (c, t), v in BARS.items()},
        "results": rows,
        "qualitative": qualitative,
        "qualitative_missing": missing,
        "machine": machine_info(args.threads),
    }


def bar_lines(payload: dict[str, Any]) -> list[str]:
    """One line per acceptance bar: measured, bar, met or missed."""
    by_case = {r["case"]: r for r in payload["results"]}
    lines = []
    for key, bar in payload["bars"].items():
        case, target = key.split("/")
        value = by_case[case]["dice"][target]
        lines.append(
            f"- {target} on `{case}`: {value:.3f} (bar {bar:.2f}): **{'met' if value >= bar else 'missed'}**"
        )
    return lines


def results_table(payload: dict[str, Any]) -> list[str]:
    """The Dice / geometry / outside-outline table."""
    head = (
        "| image | grid | "
        + " | ".join(f"Dice {t}" for t in TARGETS)
        + " | mask voxels outside the brain outline | farthest from it, by target (mm) | same grid |"
    )
    lines = [head, "|---" * (len(TARGETS) + 5) + "|"]
    for r in payload["results"]:
        grid = (
            f"{r['axcodes']} {'x'.join(f'{v:g}' for v in r['voxel_mm'])} mm, {'x'.join(map(str, r['shape']))}"
        )
        outside = sum(r["outside_outline"].values())
        total = sum(r["mask_voxels"].values())
        dices = " | ".join(f"{r['dice'][t]:.3f}" for t in TARGETS)
        far = r.get("outside_outline_max_mm")
        farthest = ", ".join(f"{t} {far[t]:g}" for t in TARGETS) if far else "not recorded"
        lines.append(
            f"| `{r['case']}` | {grid} | {dices} | {outside} of {total} | {farthest} | {r['same_grid']} |"
        )
    return lines


def qualitative_lines(payload: dict[str, Any]) -> list[str]:
    """The qualitative images: mask sizes, overlays, and the images that could not be loaded."""
    lines = ["| image | shape | " + " | ".join(f"{t} voxels" for t in TARGETS) + " | same grid |", "|---" * (len(TARGETS) + 3) + "|"]  # fmt: skip
    for q in payload["qualitative"]:
        sizes = " | ".join(str(q["mask_voxels"][t]) for t in TARGETS)
        lines.append(f"| `{q['case']}` | {'x'.join(map(str, q['shape']))} | {sizes} | {q['same_grid']} |")
    lines.append("")
    lines += [f"![{q['case']}](figures/real_brain_{q['case']}.png)" for q in payload["qualitative"]]
    lines += [f"\n`{name}` was not evaluated: {why}." for name, why in payload["qualitative_missing"].items()]
    if "skimage_brain" in payload["qualitative_missing"]:
        lines.append(SKIMAGE_BRAIN_NOTE)
    return lines


def write_doc(payload: dict[str, Any]) -> None:
    """Write docs/REAL_DATA.md; every figure in it is read from ``payload``."""
    model = payload["model"]
    text = "\n".join(
        [
            "# A brain model from synthetic heads, on real images (issue 28)",
            "",
            f"**Status ({payload['label']}): trained {payload['training']}** "
            f"(`{model['preset']}` preset, step {model['step']}, patch {model['patch_size']}, "
            f"on {', '.join(map(str, model['datasets']))}). Acceptance bars:",
            "",
            *bar_lines(payload),
            "",
            "The model saw only synthetic heads (`duplus make-phantoms --anatomy mni152`, docs/SYNTH.md):",
            "random contrasts rendered from the deformed MNI152 tissue maps. The real MNI152 T1's",
            "intensities were never seen in training. Its reference labels come from nilearn's GM/WM maps",
            f"by the generator's own rule ({payload['reference_rule']}), so the",
            "reference is exactly the label map the synthetic cases were deformed from, before",
            "deformation. The MNI152 T1 is skull-stripped: the 'outside the brain outline' column counts",
            "mask voxels where the reference has no brain (in a full head: scalp, skull, air).",
            "",
            "Made by `python benchmarks/real_brain.py CHECKPOINT --training ...`; numbers from",
            "`benchmarks/results/real_brain.json`.",
            "",
            "## MNI152 T1 (2 mm), inverted contrast, LSA 1 x 1 x 3 mm",
            "",
            *results_table(payload),
            "",
            *[f"![{r['case']}](figures/real_brain_{r['case']}.png)" for r in payload["results"]],
            "",
            "## Qualitative: shipped real images without reference labels",
            "",
            *qualitative_lines(payload),
            "",
            *REPRODUCE,
        ]
    )
    write_text_atomic(DOC, text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "checkpoint", nargs="?", help="checkpoint, run folder, .duplus bundle or installed name"
    )
    parser.add_argument("--training", default="budget not stated", help="the training budget, for the doc")
    parser.add_argument("--label", default="result", help='e.g. "pipeline check, not the result"')
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--doc-only", action="store_true", help="rewrite docs/REAL_DATA.md from the JSON")
    args = parser.parse_args()
    if not args.doc_only:
        if not args.checkpoint:
            parser.error("a checkpoint is needed (or --doc-only)")
        write_result("real_brain", rounded(run(args)))
    write_doc(json.loads(RESULT.read_text()))
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()

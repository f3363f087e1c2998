"""The demo's segmentation experiments, run on held-out phantom cases in their own geometry.

Each function takes a :class:`~duplus.inference.predictor.Predictor` and a dataset spec, predicts
the spec's test images (``imagesTs``) and scores them against ``labelsTs``; nothing here is
specific to phantoms beyond the presence of those reference labels.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from duplus.data.io import load_channels, load_nifti
from duplus.data.sampling import target_masks
from duplus.data.specs import DatasetSpec
from duplus.errors import ConfigError
from duplus.inference.predictor import Predictor
from duplus.metrics.segmentation import compute_case_metrics

logger = logging.getLogger(__name__)


def reference_masks(spec: DatasetSpec, image_path: Path) -> tuple[np.ndarray, list[str]]:
    """Reference masks ``(K, I, J, K)`` of a test image from the dataset's ``labelsTs`` folder."""
    label_path = spec.root / "labelsTs" / image_path.name
    label = load_nifti(label_path, is_label=True).array[0]
    values = spec.target_values
    return target_masks(label, values), list(values)


def _test_cases(spec: DatasetSpec, limit: int | None) -> list[Any]:
    cases = [c for c in spec.test if (spec.root / "labelsTs" / c.images[0].name).is_file()]
    return cases[:limit] if limit else cases


def evaluate_test_set(
    predictor: Predictor,
    spec: DatasetSpec,
    *,
    limit: int | None = None,
    overlap: float = 0.25,
    figure: Path | None = None,
    targets: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Dice/HD95/NSD per test case and target with the dataset's own prompts.

    ``targets`` keeps only those of the dataset's targets (e.g. an adaptation's new target).
    """
    from duplus.reporting.overlays import save_overlay

    rows = []
    for i, case in enumerate(_test_cases(spec, limit)):
        vol = load_channels(case.images)
        ref, names = reference_masks(spec, case.images[0])
        if targets is not None:
            missing = sorted(set(targets) - set(names))
            if missing:
                raise ConfigError(f"{spec.name}: no reference labels for {missing}; it labels {names}")
            keep = [names.index(t) for t in targets]
            ref, names = ref[keep], list(targets)
        pred = predictor.predict(vol, spec.modality, spec.region, names, overlap=overlap)
        for k, t in enumerate(names):
            m = compute_case_metrics(pred.masks[k], ref[k], tuple(vol.spacing))
            rows.append(
                {"dataset": spec.name, "modality": spec.modality, "case": case.case_id, "target": t, **m}
            )
        if figure is not None and i == 0:
            save_overlay(
                vol.array[0],
                vol.affine,
                pred.masks,
                names,
                figure,
                title=f"{spec.name} {case.case_id}: {pred.prompts['t1']}",
                reference=ref,
            )
    return rows


def t1_mismatch(
    predictor: Predictor, spec: DatasetSpec, wrong_t1: str, *, limit: int | None = None, overlap: float = 0.25
) -> list[dict[str, Any]]:
    """Dice with the right T1 prompt against a wrong one (same image, stem and T2 prompts)."""
    rows = []
    for case in _test_cases(spec, limit):
        vol = load_channels(case.images)
        ref, targets = reference_masks(spec, case.images[0])
        for label, override in (("right", None), ("wrong", wrong_t1)):
            pred = predictor.predict(
                vol, spec.modality, spec.region, targets, overlap=overlap, t1_override=override
            )
            for k, t in enumerate(targets):
                m = compute_case_metrics(pred.masks[k], ref[k], tuple(vol.spacing))
                rows.append(
                    {
                        "case": case.case_id,
                        "target": t,
                        "t1": label,
                        "prompt": pred.prompts["t1"],
                        "dice": m["dice"],
                    }
                )
    return rows


def organ_control(
    predictor: Predictor,
    spec: DatasetSpec,
    first: str,
    second: str,
    *,
    limit: int | None = None,
    overlap: float = 0.25,
) -> list[dict[str, Any]]:
    """Toggle T2 between two organs: each run separately, then their masks' overlap."""
    rows = []
    for case in _test_cases(spec, limit):
        vol = load_channels(case.images)
        ref, targets = reference_masks(spec, case.images[0])
        a = predictor.predict(vol, spec.modality, spec.region, [first], overlap=overlap).masks[0].astype(bool)
        b = (
            predictor.predict(vol, spec.modality, spec.region, [second], overlap=overlap)
            .masks[0]
            .astype(bool)
        )
        inter = int((a & b).sum())
        rows.append(
            {
                "case": case.case_id,
                f"{first} voxels": int(a.sum()),
                f"{second} voxels": int(b.sum()),
                "shared voxels": inter,
                "overlap (Dice between the two masks)": 2 * inter / max(int(a.sum() + b.sum()), 1),
                f"{first} Dice": compute_case_metrics(a, ref[targets.index(first)], tuple(vol.spacing))[
                    "dice"
                ],
                f"{second} Dice": compute_case_metrics(b, ref[targets.index(second)], tuple(vol.spacing))[
                    "dice"
                ],
            }
        )
    return rows


def paraphrase_robustness(
    predictor: Predictor,
    spec: DatasetSpec,
    *,
    paraphrases: int = 6,
    limit: int | None = None,
    overlap: float = 0.25,
) -> list[dict[str, Any]]:
    """Dice of each target over several paraphrases of its T2 prompt (texts used exactly)."""
    from duplus.text.prompts import t2_prompts

    rows = []
    for case in _test_cases(spec, limit):
        vol = load_channels(case.images)
        ref, targets = reference_masks(spec, case.images[0])
        for k, t in enumerate(targets):
            texts = t2_prompts(t, spec.modality)[:paraphrases]
            pred = predictor.predict(
                vol, spec.modality, spec.region, texts, overlap=overlap, exact_prompts=True
            )
            for j, text in enumerate(texts):
                m = compute_case_metrics(pred.masks[j], ref[k], tuple(vol.spacing))
                rows.append({"case": case.case_id, "target": t, "prompt": text, "dice": m["dice"]})
    return rows

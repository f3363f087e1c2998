"""The demo's unseen-wording experiment: held-out T2 and T1 wordings on the untouched test cases.

For every test wording of :mod:`duplus.demo.wordings`, each test case is segmented twice: with the
text as written (``exact_prompts``, what the text encoder makes of it) and through the predictor's
default path, which resolves the text to a trained target first (:mod:`duplus.text.matching`).
Both are scored against the reference of the target the wording names, beside the canonical name.
A wording naming no trained target is scored by how much its mask covers a labelled organ.
The validation wordings only report how the mapping resolves them (they chose its thresholds).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from duplus.data.io import load_channels
from duplus.data.specs import DatasetSpec
from duplus.demo.experiments import _test_cases, reference_masks
from duplus.demo.wordings import T1_TEST, TEST, VALIDATION, WORDING_CLASSES, Wording
from duplus.inference.predictor import Predictor

logger = logging.getLogger(__name__)


def dice_score(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks (1 when both are empty, as :func:`~duplus.metrics.segmentation.compute_case_metrics`)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


@contextmanager
def _quiet() -> Iterator[None]:
    """The predictor without its per-target warnings (this experiment asks for odd texts on purpose)."""
    log = logging.getLogger("duplus.inference.predictor")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def wording_rows(
    predictor: Predictor,
    spec: DatasetSpec,
    wordings: Sequence[Wording],
    *,
    limit: int | None = None,
    overlap: float = 0.25,
) -> list[dict[str, Any]]:
    """Dice of each wording (as written and mapped) and of the canonical name, per test case."""
    texts = [w.text for w in wordings]
    with _quiet():
        matches = predictor.match_targets(texts, spec.modality)
    rows: list[dict[str, Any]] = []
    for case in _test_cases(spec, limit):
        vol = load_channels(case.images)
        ref, names = reference_masks(spec, case.images[0])
        resolved = sorted({m.target for m in matches if m.target} - set(names))
        canonical = [*names, *resolved]
        # one pass: the canonical names (what a mapped wording is prompted with) and every text as written
        with _quiet():
            pred = predictor.predict(
                vol, spec.modality, spec.region, [*canonical, *texts], overlap=overlap, exact_prompts=True
            )
        masks = {t: pred.masks[k].astype(bool) for k, t in enumerate(canonical)}
        written = pred.masks[len(canonical) :].astype(bool)
        for w, m, as_written in zip(wordings, matches, written, strict=True):
            mapped = masks[m.target] if m.target else np.zeros_like(as_written)
            row = {"case": case.case_id, "dataset": spec.name, "text": w.text, "kind": w.kind,
                   "target": w.target, "resolved": m.target, "how": m.how, "similarity": m.similarity}  # fmt: skip
            if w.target is not None:
                truth = ref[names.index(w.target)].astype(bool)
                row.update(
                    canonical=dice_score(masks[w.target], truth),
                    as_written=dice_score(as_written, truth),
                    mapped=dice_score(mapped, truth),
                )
            else:  # names nothing trained: how much does its mask look like a labelled organ?
                row.update(
                    as_written_voxels=int(as_written.sum()),
                    mapped_voxels=int(mapped.sum()),
                    as_written_organ_dice=max(dice_score(as_written, r.astype(bool)) for r in ref),
                    mapped_organ_dice=max(dice_score(mapped, r.astype(bool)) for r in ref),
                )
            rows.append(row)
    return rows


def t1_rows(
    predictor: Predictor,
    spec: DatasetSpec,
    *,
    limit: int | None = None,
    overlap: float = 0.25,
    quick: bool = False,
) -> list[dict[str, Any]]:
    """Dice per target with each test T1 wording of the spec's modality (as written) and the canonical T1."""
    wordings = [text for text, modality in T1_TEST if modality == spec.modality][: 1 if quick else None]
    rows = []
    for case in _test_cases(spec, limit):
        vol = load_channels(case.images)
        ref, names = reference_masks(spec, case.images[0])
        for text in [None, *wordings]:
            with _quiet():
                pred = predictor.predict(
                    vol, spec.modality, spec.region, names, overlap=overlap, t1_override=text
                )
            for k, t in enumerate(names):
                rows.append({"case": case.case_id, "dataset": spec.name, "t1": pred.prompts["t1"],
                             "canonical": text is None, "target": t,
                             "dice": dice_score(pred.masks[k].astype(bool), ref[k].astype(bool))})  # fmt: skip
    return rows


def validation_mapping(predictor: Predictor, brain: set[str]) -> list[dict[str, Any]]:
    """How the mapping resolves the validation wordings (no images: they chose its thresholds)."""
    out = []
    for w in VALIDATION:
        with _quiet():
            m = predictor.match_targets([w.text], "MRI" if w.target in brain else "CT")[0]
        out.append({"text": w.text, "kind": w.kind, "target": w.target, "resolved": m.target, "how": m.how,
                    "similarity": m.similarity, "correct": m.target == w.target})  # fmt: skip
    return out


def unseen_wording_experiment(
    predictor: Predictor,
    specs: dict[str, DatasetSpec],
    *,
    limit: int | None = None,
    overlap: float = 0.25,
    quick: bool = False,
) -> dict[str, Any]:
    """Test wordings on the abdominal CT and brain MRI test cases; T1 wordings on the abdominal CT
    and MRI; the validation wordings' mapping. ``quick``: one wording per class and one T1 wording."""
    brain_spec, ct_spec = specs["Task04_PhantomBrainMRI"], specs["Task01_PhantomAbdomenCT"]
    brain = set(brain_spec.target_values)
    test = [w for k in WORDING_CLASSES for w in [w for w in TEST if w.kind == k][: 1 if quick else None]]
    t2 = wording_rows(
        predictor, ct_spec, [w for w in test if w.target not in brain], limit=limit, overlap=overlap
    )
    t2 += wording_rows(
        predictor, brain_spec, [w for w in test if w.target in brain], limit=limit, overlap=overlap
    )
    t1_specs = (
        ("Task01_PhantomAbdomenCT",) if quick else ("Task01_PhantomAbdomenCT", "Task03_PhantomAbdomenMRI")
    )
    t1 = [
        r
        for name in t1_specs
        for r in t1_rows(predictor, specs[name], limit=limit, overlap=overlap, quick=quick)
    ]
    return {
        "classes": list(WORDING_CLASSES),
        "t2": t2,
        "t1": t1,
        "validation": validation_mapping(predictor, brain),
    }

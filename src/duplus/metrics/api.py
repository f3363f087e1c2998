"""Library entry point behind ``duplus evaluate``: match predictions to references, score, tabulate."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from duplus.data.io import check_same_grid, is_nifti, load_nifti
from duplus.data.label_space import canonical_label_map, canonical_target
from duplus.data.preprocess import check_label_values
from duplus.data.sampling import target_masks
from duplus.data.specs import compute_target_values
from duplus.errors import InputError
from duplus.fileio import OutputFolder, read_json, write_text_atomic
from duplus.metrics.segmentation import compute_case_metrics

logger = logging.getLogger(__name__)


def _stem(path: Path) -> str:
    name = path.name
    return name[:-7] if name.endswith(".nii.gz") else name[:-4] if name.endswith(".nii") else name


def read_label_names(path: str | Path) -> dict[int, str]:
    """``{value: canonical target}`` from a ``labels.json`` (ours), an MSD or an nnU-Net ``dataset.json``."""
    data = read_json(path)
    labels = data.get("labels") if isinstance(data, dict) else None
    if not isinstance(labels, dict) or not labels:
        raise InputError(path, "no 'labels' mapping found")
    try:
        if all(str(k).lstrip("-").isdigit() for k in labels):  # MSD / ours: value -> name
            return canonical_label_map({int(k): str(v) for k, v in labels.items()})
        return canonical_label_map(
            {int(v if not isinstance(v, list) else v[0]): str(k) for k, v in labels.items()}
        )
    except (TypeError, ValueError) as exc:
        raise InputError(path, f"cannot read the label values ({exc})") from exc


def load_masks(
    folder: Path, labels: dict[int, str] | None
) -> dict[str, dict[str, tuple[np.ndarray, object]]]:
    """``{case: {target: (mask, volume)}}`` from per-target folders or from label maps + names."""
    cases: dict[str, dict[str, tuple[np.ndarray, object]]] = {}
    if not folder.is_dir():
        raise InputError(folder, "not a folder")
    maps = sorted(
        p
        for p in folder.iterdir()
        if p.is_file()
        and is_nifti(p)
        and not p.name.startswith(".")
        and not _stem(p).endswith("_probabilities")
    )
    if maps:
        if labels is None and (folder / "labels.json").is_file():
            labels = read_label_names(folder / "labels.json")
        if labels is None:
            raise InputError(folder, "label maps need names: pass --labels (labels.json or dataset.json)")
        for p in maps:
            vol = load_nifti(p, is_label=True)
            check_label_values(vol.array, labels, p)
            values = compute_target_values(labels)
            masks = target_masks(vol.array[0], values)
            cases[_stem(p)] = {t: (masks[k], vol) for k, t in enumerate(values)}
    for sub in sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")):
        files = sorted(p for p in sub.iterdir() if p.is_file() and is_nifti(p) and not p.name.startswith("."))
        for p in files:
            vol = load_nifti(p, is_label=True)
            cases.setdefault(sub.name, {})[canonical_target(_stem(p))] = (vol.array[0] > 0, vol)
    if not cases:
        raise InputError(folder, "no NIfTI predictions or references found")
    return cases


def evaluate_folders(
    pred_dir: str | Path, ref_dir: str | Path, labels: str | Path | None = None, nsd_tolerance_mm: float = 2.0
) -> pd.DataFrame:
    """Per case and target Dice, HD95 and NSD for every target present in both folders."""
    ref_names = read_label_names(labels) if labels else None
    preds = load_masks(Path(pred_dir), None)
    refs = load_masks(Path(ref_dir), ref_names)
    rows = []
    common = sorted(set(preds) & set(refs))
    if not common:
        raise InputError(pred_dir, f"no case names in common with {ref_dir}")
    for case in common:
        for target, (pmask, pvol) in preds[case].items():
            if target not in refs[case]:
                logger.warning("%s: no reference for target %r", case, target)
                continue
            rmask, rvol = refs[case][target]
            check_same_grid(rvol, pvol)  # type: ignore[arg-type]
            m = compute_case_metrics(pmask, rmask, tuple(rvol.spacing), nsd_tolerance_mm)  # type: ignore[attr-defined]
            rows.append({"case": case, "target": target, **m})
    if not rows:
        raise InputError(pred_dir, "no target names in common with the references")
    return pd.DataFrame(rows)


def summary_markdown(df: pd.DataFrame) -> str:
    """Markdown table of mean ± sd per target."""
    lines = ["| target | n | Dice | HD95 (mm) | NSD |", "|---|---|---|---|---|"]
    for target, g in df.groupby("target", sort=False):
        cells = []
        for col in ("dice", "hd95", "nsd"):
            v = g[col].dropna()
            cells.append(f"{v.mean():.3f} ± {v.std(ddof=0):.3f}" if len(v) else "n/a")
        lines.append(f"| {target} | {len(g)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def evaluate(
    pred: str | Path,
    ref: str | Path,
    *,
    out: str | Path,
    labels: str | Path | None = None,
    nsd_tolerance_mm: float = 2.0,
    overwrite: bool = False,
) -> pd.DataFrame:
    """Score predictions against references; write ``out/metrics.csv`` and ``out/metrics.md``.

    Args:
        pred: folder of predictions (per-target folders, or label maps with ``labels.json``).
        ref: folder of reference label maps or per-target masks.
        out: output folder (not inside ``pred`` or ``ref``).
        labels: ``labels.json`` / ``dataset.json`` naming the reference label values.
        nsd_tolerance_mm: tolerance of the normalised surface Dice.
        overwrite: replace metrics an earlier ``duplus evaluate`` wrote in ``out``.

    Returns:
        One row per case and target: ``case, target, dice, hd95, nsd``.
    """
    if not float(nsd_tolerance_mm) > 0:
        raise InputError("--nsd-tolerance", f"must be positive, got {nsd_tolerance_mm}")
    inputs = [pred, ref, *([labels] if labels else [])]
    with OutputFolder(out, inputs=inputs, replace_owned=overwrite) as folder:
        for name in ("metrics.csv", "metrics.md"):
            folder.check_write(folder.root / name)
        df = evaluate_folders(pred, ref, labels, nsd_tolerance_mm)
        write_text_atomic(folder.root / "metrics.csv", df.to_csv(index=False))
        write_text_atomic(folder.root / "metrics.md", summary_markdown(df))
    return df

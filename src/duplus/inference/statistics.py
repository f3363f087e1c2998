"""Per-target statistics of a segmentation: volume, intensity inside the mask, model confidence.

One row per case and target, written as ``statistics.csv``::

    case,target,voxels,volume_ml,mean,sd,unit,suv_max,suv_mean,mean_probability

``volume_ml`` is the voxel count times the voxel volume (``|det|`` of the affine's 3x3 part, mm^3)
/ 1000. ``mean``/``sd`` are the image's values inside the mask (the CT channel of a PET/CT);
``suv_max``/``suv_mean`` are filled for PET and PET/CT (from the PET channel, which is in SUV:
DICOM PET is converted on reading, NIfTI PET is taken as SUV, as in training); ``mean_probability``
is the model's mean sigmoid probability inside the mask. Empty masks leave the intensity columns
blank.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from duplus.data.io import Volume
from duplus.fileio import write_text_atomic

STATISTICS_NAME = "statistics.csv"


@dataclass(frozen=True)
class TargetStatistics:
    """One row of ``statistics.csv``."""

    case: str
    target: str
    voxels: int
    volume_ml: float
    mean: float | None
    sd: float | None
    unit: str
    suv_max: float | None
    suv_mean: float | None
    mean_probability: float | None


def voxel_volume_ml(affine: np.ndarray) -> float:
    """The volume of one voxel in millilitres: ``|det(affine[:3, :3])|`` mm^3 / 1000."""
    return abs(float(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3]))) / 1000.0


def _unit(volume: Volume, modality: str) -> str:
    if modality in ("CT", "PETCT"):
        return "HU"
    if modality == "PET":
        return str(volume.meta.get("units") or "SUV")
    return str(volume.meta.get("units") or "")


def compute_statistics(
    case: str,
    volume: Volume,
    targets: list[str],
    masks: np.ndarray,
    probabilities: Sequence[np.ndarray],
    modality: str,
) -> list[TargetStatistics]:
    """Statistics of each target's mask in one case.

    Args:
        case: the case name.
        volume: the input image, ``(C, I, J, K)`` (PET/CT: PET first, then CT).
        targets: the K target names.
        masks: ``(K, I, J, K)`` binary masks on the volume's grid.
        probabilities: the K sigmoid probability maps ``(I, J, K)`` on the same grid (an array, or
            a sequence that makes them one at a time).
        modality: CT, MRI, PET or PETCT (normalised).

    Returns:
        One :class:`TargetStatistics` per target, in order.
    """
    intensity = volume.array[1] if modality == "PETCT" else volume.array[0]
    suv = volume.array[0] if modality in ("PET", "PETCT") else None
    voxel_ml = voxel_volume_ml(volume.affine)
    rows = []
    for k, target in enumerate(targets):
        inside = np.asarray(masks[k]) > 0
        count = int(inside.sum())
        values = intensity[inside].astype(np.float64)
        suv_values = suv[inside].astype(np.float64) if suv is not None else None
        rows.append(
            TargetStatistics(
                case=case,
                target=target,
                voxels=count,
                volume_ml=count * voxel_ml,
                mean=float(values.mean()) if count else None,
                sd=float(values.std()) if count else None,
                unit=_unit(volume, modality),
                suv_max=float(suv_values.max()) if suv_values is not None and count else None,
                suv_mean=float(suv_values.mean()) if suv_values is not None and count else None,
                mean_probability=float(np.asarray(probabilities[k])[inside].mean()) if count else None,
            )
        )
    return rows


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def write_statistics(path: str | Path, rows: list[TargetStatistics]) -> Path:
    """Write ``rows`` as CSV (atomically), with the header even when there are none."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([f.name for f in fields(TargetStatistics)])
    for row in rows:
        writer.writerow([_cell(v) for v in asdict(row).values()])
    write_text_atomic(path, buf.getvalue())
    return Path(path)

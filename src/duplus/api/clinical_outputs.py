"""The clinical outputs of ``duplus segment`` beside the NIfTI masks: DICOM-SEG, statistics, previews.

:class:`ClinicalOutputs` is what :func:`duplus.api.segmentation.segment_files` drives: :meth:`ClinicalOutputs.check` before any
heavy work, :meth:`ClinicalOutputs.write_case` per case (into the case's staging folder or the
output folder), and :meth:`ClinicalOutputs.finish` once at the end. Files, in the output folder::

    <case>.seg.dcm          output_type "dicom-seg" (instead of the NIfTI masks; DICOM input only)
    <case>_preview.png      preview: an axial and a coronal slice with the masks in colour
    statistics.csv          statistics: one row per case and target (:mod:`duplus.inference.statistics`)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from duplus.data.io import Volume
from duplus.errors import InputError
from duplus.inference.statistics import (
    STATISTICS_NAME,
    TargetStatistics,
    compute_statistics,
    write_statistics,
)

logger = logging.getLogger(__name__)

OUTPUT_TYPES = ("nifti", "dicom-seg")
PREVIEW_SUFFIX = "_preview.png"
SEG_SUFFIX = ".seg.dcm"


@dataclass
class ClinicalOutputs:
    """Which clinical outputs a segment run writes, and the statistics gathered so far.

    Args:
        output_type: ``"nifti"`` (masks as NIfTI) or ``"dicom-seg"`` (one DICOM-SEG per case).
        statistics: write ``statistics.csv``.
        preview: write a PNG overlay per case.
        model_name: the algorithm name recorded in DICOM-SEG segments.
    """

    output_type: str = "nifti"
    statistics: bool = False
    preview: bool = False
    model_name: str = "DuPLUS"
    rows: list[TargetStatistics] = field(default_factory=list)

    @property
    def writes_nifti_masks(self) -> bool:
        return self.output_type == "nifti"

    def planned_names(self, case: str) -> list[str]:
        """The files :meth:`write_case` writes for ``case``, relative to the output folder."""
        names = [f"{case}{SEG_SUFFIX}"] if self.output_type == "dicom-seg" else []
        return names + ([f"{case}{PREVIEW_SUFFIX}"] if self.preview else [])

    def run_names(self) -> list[str]:
        """The files :meth:`finish` writes once per run, relative to the output folder."""
        return [STATISTICS_NAME] if self.statistics else []

    def check(self, cases: dict[str, list[Path]], *, multilabel: bool = False) -> None:
        """Refuse options that cannot work for these inputs, before anything heavy runs.

        Raises:
            InputError: an unknown output type; ``dicom-seg`` for a case that is not one DICOM
                series (a folder or a zip archive), or together with ``multilabel``.
        """
        from duplus.data.dicom import is_dicom_input

        if self.output_type not in OUTPUT_TYPES:
            raise InputError(
                "--output-type", f"{self.output_type!r}; choose one of {', '.join(OUTPUT_TYPES)}"
            )
        if self.output_type != "dicom-seg":
            return
        if multilabel:
            raise InputError("--output-type", "dicom-seg holds every target in one file; drop --ml")
        for case, files in cases.items():
            if len(files) != 1 or not is_dicom_input(files[0]):
                raise InputError(
                    files[0], f"case {case} is not a DICOM series; dicom-seg output needs DICOM input"
                )

    def write_case(
        self,
        out: Path,
        case: str,
        volume: Volume,
        targets: list[str],
        masks: np.ndarray,
        probabilities: Sequence[np.ndarray],
        modality: str,
    ) -> list[Path]:
        """Write one case's DICOM-SEG and preview into ``out``; keep its statistics for :meth:`finish`.

        Args:
            out: the folder to write into (the output folder or the case's staging folder).
            case: the case name.
            volume: the input volume (its ``meta["dicom"]`` for DICOM-SEG).
            targets: the K target names.
            masks: ``(K, I, J, K)`` binary masks on the volume's grid.
            probabilities: the K probability maps ``(I, J, K)`` on the volume's grid (an array, or
                :meth:`Prediction.probability_maps`, which makes one at a time).
            modality: CT, MRI, PET or PETCT.

        Returns:
            The files written.
        """
        written = []
        if self.output_type == "dicom-seg":
            from duplus.inference.dicom_seg import write_dicom_seg

            source = volume.meta.get("dicom")
            if source is None:
                raise InputError(volume.path, "dicom-seg output needs DICOM input")
            written.append(
                write_dicom_seg(
                    out / f"{case}{SEG_SUFFIX}",
                    source,
                    masks,
                    targets,
                    volume.affine,
                    model_name=self.model_name,
                )
            )
        if self.preview:
            from duplus.reporting.overlays import save_overlay

            channel = 1 if modality == "PETCT" else 0
            path = out / f"{case}{PREVIEW_SUFFIX}"
            written.append(
                save_overlay(volume.array[channel], volume.affine, masks, targets, path, title=case)
            )
        if self.statistics:
            self.rows.extend(compute_statistics(case, volume, targets, masks, probabilities, modality))
        return written

    def finish(self, out: Path) -> list[Path]:
        """Write ``statistics.csv`` (when asked) for every case written; returns the files."""
        if not self.statistics:
            return []
        path = write_statistics(out / STATISTICS_NAME, self.rows)
        logger.info("statistics of %d target(s) written to %s", len(self.rows), path)
        return [path]

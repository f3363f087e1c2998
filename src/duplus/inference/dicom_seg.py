"""DICOM-SEG output through highdicom: one segment per target, referencing the source series.

A segment's label is the target text as asked; its property category and type are SNOMED CT codes
from pydicom's code dictionary where the target is a known anatomical structure (laterality stays
in the label: "left kidney" is coded as Kidney), and the generic "Anatomical Structure" otherwise.
Lesions are coded as a morphologically abnormal structure (Neoplasm, Cyst, Lesion) with their
organ as the anatomic region.

The SEG is a BINARY segmentation whose frames correspond one to one with the source slices when
the volume was read as it is; a volume resampled with ``allow_uneven`` is written with its own
plane positions (highdicom works out which source slices the frames match).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from duplus import __version__
from duplus.data.dicom import DicomSource
from duplus.data.label_space import canonical_target
from duplus.errors import InputError
from duplus.fileio import atomic_path

logger = logging.getLogger(__name__)

_ORGAN, _STRUCTURE, _TISSUE, _ABNORMAL = (
    "Organ",
    "AnatomicalStructure",
    "Tissue",
    "MorphologicallyAbnormalStructure",
)

SEGMENT_CODES: dict[str, tuple[str, str, str | None]] = {
    "liver": (_ORGAN, "Liver", None),
    "spleen": (_ORGAN, "Spleen", None),
    "kidney": (_ORGAN, "Kidney", None),
    "left kidney": (_ORGAN, "Kidney", None),
    "right kidney": (_ORGAN, "Kidney", None),
    "gallbladder": (_ORGAN, "Gallbladder", None),
    "esophagus": (_ORGAN, "Esophagus", None),
    "stomach": (_ORGAN, "Stomach", None),
    "pancreas": (_ORGAN, "Pancreas", None),
    "duodenum": (_ORGAN, "Duodenum", None),
    "bladder": (_ORGAN, "Bladder", None),
    "left adrenal gland": (_ORGAN, "AdrenalGland", None),
    "right adrenal gland": (_ORGAN, "AdrenalGland", None),
    "left lung": (_ORGAN, "Lung", None),
    "right lung": (_ORGAN, "Lung", None),
    "heart": (_ORGAN, "Heart", None),
    "brain": (_ORGAN, "Brain", None),
    "left eye": (_ORGAN, "Eye", None),
    "right eye": (_ORGAN, "Eye", None),
    "left parotid": (_ORGAN, "ParotidGland", None),
    "right parotid": (_ORGAN, "ParotidGland", None),
    "aorta": (_STRUCTURE, "Aorta", None),
    "inferior vena cava": (_STRUCTURE, "InferiorVenaCava", None),
    "portal vein and splenic vein": (_STRUCTURE, "PortalVein", None),
    "trachea": (_STRUCTURE, "Trachea", None),
    "spinal cord": (_STRUCTURE, "SpinalCord", None),
    "brainstem": (_STRUCTURE, "BrainStem", None),
    "mandible": (_STRUCTURE, "Mandible", None),
    "left ventricle": (_STRUCTURE, "LeftVentricle", None),
    "right ventricle": (_STRUCTURE, "RightVentricle", None),
    "myocardium": (_STRUCTURE, "LeftVentricleMyocardium", None),
    "hippocampus": (_STRUCTURE, "Hippocampus", None),
    "lymph node": (_STRUCTURE, "LymphNode", None),
    "cerebrospinal fluid": (_STRUCTURE, "CerebrospinalFluid", None),
    "white matter": (_TISSUE, "WhiteMatter", None),
    "grey matter": (_TISSUE, "GrayMatter", None),
    "liver tumour": (_ABNORMAL, "Neoplasm", "Liver"),
    "kidney tumour": (_ABNORMAL, "Neoplasm", "Kidney"),
    "kidney cyst": (_ABNORMAL, "Cyst", "Kidney"),
    "pancreas tumour": (_ABNORMAL, "Neoplasm", "Pancreas"),
    "lung tumour": (_ABNORMAL, "Neoplasm", "Lung"),
    "brain tumour": (_ABNORMAL, "Neoplasm", "Brain"),
    "primary tumour": (_ABNORMAL, "Neoplasm", None),
    "lesion": (_ABNORMAL, "Lesion", None),
}
"""Canonical target -> (property category, property type, anatomic region), as names of
``pydicom.sr.codedict.codes.SCT``."""


def segment_codes(target: str) -> tuple[Any, Any, Any | None]:
    """The SNOMED CT ``(category, type, region)`` codes of a target (generic when unknown)."""
    from pydicom.sr.codedict import codes

    category, kind, region = SEGMENT_CODES.get(canonical_target(target), (_STRUCTURE, _STRUCTURE, None))
    return (
        getattr(codes.SCT, category),
        getattr(codes.SCT, kind),
        getattr(codes.SCT, region) if region is not None else None,
    )


def _descriptions(targets: list[str], model_name: str) -> list[Any]:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(
        name=model_name[:64], family=codes.cid7162.ArtificialIntelligence, version=__version__
    )
    out = []
    for number, target in enumerate(targets, start=1):
        category, kind, region = segment_codes(target)
        out.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=target[:64],
                segmented_property_category=category,
                segmented_property_type=kind,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
                anatomic_regions=[region] if region is not None else None,
            )
        )
    return out


def _as_highdicom_volume(masks: np.ndarray, affine: np.ndarray, source: DicomSource) -> Any:
    """``(K, I, J, S)`` masks on the RAS grid -> a highdicom Volume ``(S, J, I, K)`` in LPS."""
    import highdicom as hd

    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, dtype=np.float64)
    perm = np.eye(4)[[2, 1, 0, 3]]  # (slice, row, column) indices -> (column, row, slice)
    return hd.Volume(
        array=np.ascontiguousarray(np.transpose(masks, (3, 2, 1, 0))),
        affine=lps @ perm.T,
        coordinate_system="PATIENT",
        frame_of_reference_uid=str(source.datasets[0].FrameOfReferenceUID),
        channels={hd.ChannelDescriptor("SegmentNumber"): list(range(1, masks.shape[0] + 1))},
    )


def write_dicom_seg(
    path: str | Path,
    source: DicomSource,
    masks: np.ndarray,
    targets: list[str],
    affine: np.ndarray,
    *,
    model_name: str = "DuPLUS",
) -> Path:
    """Write the masks of one DICOM case as a DICOM-SEG file (atomically).

    Args:
        path: the ``.dcm`` file to write.
        source: the series the volume was read from (``volume.meta["dicom"]``).
        masks: ``(K, I, J, S)`` binary masks on the volume's grid (columns, rows, slices).
        targets: the K target texts (segment labels).
        affine: the volume's RAS+ affine.
        model_name: the algorithm name recorded with each segment.

    Raises:
        InputError: a source series without FrameOfReferenceUID or the patient/study tags a
            SEG must copy (naming the series).
    """
    import highdicom as hd

    path = Path(path)
    first = source.datasets[0]
    if "FrameOfReferenceUID" not in first:
        raise InputError(source.path, "the DICOM series has no FrameOfReferenceUID; a DICOM-SEG needs it")
    masks = (np.asarray(masks) > 0).astype(np.uint8)
    if source.resampled:
        pixels: Any = _as_highdicom_volume(masks, affine, source)
    else:
        pixels = np.ascontiguousarray(np.transpose(masks, (3, 2, 1, 0)))  # (S, rows, cols, K)
    try:
        seg = hd.seg.Segmentation(
            source_images=source.datasets,
            pixel_array=pixels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=_descriptions(list(targets), model_name),
            series_instance_uid=hd.UID(),
            series_number=int(first.get("SeriesNumber") or 0) + 1000,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="DuPLUS",
            manufacturer_model_name=model_name[:64],
            software_versions=__version__,
            device_serial_number="none",
            content_label="DUPLUS",
            content_description="text-prompted segmentation",
            series_description="DuPLUS segmentation",
            omit_empty_frames=bool(masks.any()),
        )
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(source.path, f"cannot make a DICOM-SEG of this series ({detail[:200]})") from exc
    with atomic_path(path) as tmp:
        seg.save_as(str(tmp))
    return path


def read_dicom_seg(path: str | Path, source: DicomSource) -> tuple[list[str], np.ndarray]:
    """Read a DICOM-SEG back onto its source series' slices (highdicom).

    Returns:
        ``(labels, masks)``: the segment labels and ``(K, I, J, S)`` uint8 masks on the source
        grid (columns, rows, slices in the order of ``source.datasets``).
    """
    import highdicom as hd

    seg = hd.seg.segread(str(path))
    numbers = [int(d.SegmentNumber) for d in seg.SegmentSequence]
    labels = [str(d.SegmentLabel) for d in seg.SegmentSequence]
    frames = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[str(d.SOPInstanceUID) for d in source.datasets],
        segment_numbers=numbers,
        combine_segments=False,
        skip_overlap_checks=True,
    )  # (S, rows, cols, K)
    return labels, np.ascontiguousarray(np.transpose(frames, (3, 2, 1, 0))).astype(np.uint8)

"""Library entry point behind ``duplus segment``: find the cases, predict, write outputs."""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from duplus.data.io import Volume, is_nifti, load_channels, load_image, save_nifti
from duplus.errors import InputError
from duplus.fileio import check_writable_folder, ensure_distinct_output, removing_new_folders
from duplus.inference.clinical import ClinicalOutputs

logger = logging.getLogger(__name__)

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})$")


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def discover_cases(input_path: str | Path) -> dict[str, list[Path]]:
    """Map case names to their image files (channels in order) or to a DICOM series folder.

    Accepts a NIfTI file, a folder of NIfTI files (nnU-Net ``CASE_0000.nii.gz``, ``CASE_0001``...
    are grouped as channels of one case), a DICOM series folder, or a ``.zip`` of a DICOM series.
    """
    from duplus.data.dicom import is_dicom_input

    path = Path(input_path)
    if not path.exists():
        raise InputError(path, "input not found")
    if path.is_file() and is_dicom_input(path):  # a zip archive of one DICOM series
        return {path.name[: -len(".zip")]: [path]}
    if path.is_file():
        if not is_nifti(path):
            raise InputError(
                path, "unsupported input; expected a NIfTI file, a folder of them, or a DICOM folder"
            )
        m = _CHANNEL.match(_stem(path))
        return {m.group("case") if m else _stem(path): [path]}
    niftis = sorted(p for p in path.iterdir() if p.is_file() and is_nifti(p))
    if not niftis:
        return {path.name: [path]}  # a DICOM series folder
    cases: dict[str, list[tuple[int, Path]]] = {}
    for p in niftis:
        m = _CHANNEL.match(_stem(p))
        case, ch = (m.group("case"), int(m.group("ch"))) if m else (_stem(p), 0)
        cases.setdefault(case, []).append((ch, p))
    out: dict[str, list[Path]] = {}
    for case, items in cases.items():
        chans = sorted(items)
        if [c for c, _ in chans] != list(range(len(chans))):
            raise InputError(
                chans[0][1], f"case {case} has channels {[c for c, _ in chans]}; expected 0000, 0001, ..."
            )
        out[case] = [p for _, p in chans]
    return out


def load_case_volume(
    files: list[Path], *, series_uid: str | None = None, allow_uneven: bool = False
) -> Volume:
    if len(files) == 1:
        return load_image(files[0], series_uid=series_uid, allow_uneven=allow_uneven)
    return load_channels(files)


def clinical_outputs(args: argparse.Namespace) -> ClinicalOutputs:
    """The DICOM-SEG / statistics / preview choices of a ``duplus segment`` call."""
    return ClinicalOutputs(
        output_type=getattr(args, "output_type", "nifti"),
        statistics=bool(getattr(args, "statistics", False)),
        preview=bool(getattr(args, "preview", False)),
    )


def check_segment_options(args: argparse.Namespace) -> None:
    """Refuse bad prompts and options of ``duplus segment`` before any heavy work.

    Raises:
        InputError: an unknown modality; an empty, whitespace-only or over-long region or target;
            duplicate targets; overlap outside ``[0, 1)``; a window batch below 1; a threshold
            outside ``[0, 1]``.
    """
    from duplus.data.specs import normalise_modality
    from duplus.inference.predictor import MAX_PROMPT_CHARS, validate_targets

    normalise_modality(args.modality, source="--modality")
    region = " ".join(str(args.region).split())
    if not region:
        raise InputError("--region", "empty or whitespace-only region")
    if len(region) > MAX_PROMPT_CHARS:
        raise InputError("--region", f"region of {len(region)} characters; at most {MAX_PROMPT_CHARS}")
    validate_targets(list(args.targets), exact_prompts=bool(getattr(args, "exact_prompts", False)))
    if not 0.0 <= float(args.overlap) < 1.0:
        raise InputError("--overlap", f"must be in [0, 1), got {args.overlap}")
    if int(args.sw_batch_size) < 1:
        raise InputError("--sw-batch-size", f"must be at least 1, got {args.sw_batch_size}")
    if not 0.0 <= float(args.threshold) <= 1.0:
        raise InputError("--threshold", f"must be in [0, 1], got {args.threshold}")


def planned_outputs(out: Path, case: str, args: argparse.Namespace) -> list[Path]:
    """The paths ``duplus segment`` writes (or replaces) for ``case``."""
    clinical = clinical_outputs(args)
    if not clinical.writes_nifti_masks:
        paths = []
    elif args.ml:
        paths = [out / f"{case}.nii.gz", out / "labels.json"]
    else:
        paths = [out / case]
    paths += clinical.planned(out, case)
    if args.save_probabilities:
        paths.append(out / f"{case}_probabilities.nii.gz")
    return paths


def check_outputs_spare_inputs(out: Path, cases: dict[str, list[Path]], args: argparse.Namespace) -> None:
    """Refuse an output that would replace an input: e.g. ``-o scans`` for the DICOM folder
    ``scans/ct1``, whose per-target output folder ``scans/ct1`` *is* the input."""
    inputs = [p.resolve() for files in cases.values() for p in files]
    for case in cases:
        for dest in planned_outputs(out, case, args):
            target = dest.resolve()
            for src in inputs:
                if target == src or target in src.parents:
                    raise InputError(
                        args.output,
                        f"writing {dest} would replace the input {src}; choose another output folder",
                    )


def run_segment(args: argparse.Namespace) -> list[Path]:
    """``duplus segment``: writes ``OUT/<case>/<target>.nii.gz`` or, with ``--ml``, ``OUT/<case>.nii.gz``.

    Options, prompts and the output folder are checked before anything heavy runs; an output that
    would replace an input is refused. Each case is written into a temporary folder inside OUT and
    moved into place when complete, so an interrupted run leaves no half-written case, and a run
    that fails before its first case leaves no output folder behind.
    """
    from tqdm.auto import tqdm

    from duplus.data.specs import normalise_modality
    from duplus.inference.postprocess import write_multilabel, write_per_target
    from duplus.inference.predictor import Predictor

    out = Path(args.output)
    ensure_distinct_output(out, args.input)
    check_segment_options(args)
    cases = discover_cases(args.input)
    clinical = clinical_outputs(args)
    clinical.check(cases, multilabel=args.ml)
    check_outputs_spare_inputs(out, cases, args)
    check_writable_folder(out)
    predictor: Predictor | None = None
    written: list[Path] = []
    with removing_new_folders(out):
        for case, files in tqdm(cases.items(), desc="segment", disable=args.quiet):
            volume = load_case_volume(
                files,
                series_uid=getattr(args, "series_uid", None),
                allow_uneven=bool(getattr(args, "allow_uneven", False)),
            )
            if predictor is None:  # after the first image is known to be good
                predictor = Predictor.from_checkpoint(
                    args.checkpoint, device=args.device, adapter=args.adapter
                )
            pred = predictor.predict(
                volume,
                args.modality,
                args.region,
                list(args.targets),
                overlap=args.overlap,
                sw_batch_size=args.sw_batch_size,
                tta=args.tta,
                threshold=args.threshold,
            )
            out.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{case}.", dir=out))
            try:
                final: list[Path] = []
                if not clinical.writes_nifti_masks:
                    pass
                elif args.ml:
                    write_multilabel(staging, case, pred.targets, pred.masks, pred.affine, pred.prompts)
                    final += [out / f"{case}.nii.gz", out / "labels.json"]
                    (staging / f"{case}.nii.gz").replace(final[0])
                    (staging / "labels.json").replace(final[1])
                else:
                    write_per_target(staging / "masks", pred.targets, pred.masks, pred.affine)
                    final += [out / case]
                    if final[0].exists():
                        shutil.rmtree(final[0])
                    (staging / "masks").replace(final[0])
                for extra in clinical.write_case(
                    staging,
                    case,
                    volume,
                    pred.targets,
                    pred.masks,
                    pred.probabilities,
                    normalise_modality(args.modality, source="--modality"),
                ):
                    extra.replace(out / extra.name)
                    final.append(out / extra.name)
                if args.save_probabilities:
                    prob_path = out / f"{case}_probabilities.nii.gz"
                    save_nifti(pred.probabilities.astype(np.float32), pred.affine, prob_path)
                    final.append(prob_path)
                written.extend(final)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            logger.info(
                "%s: %s",
                case,
                ", ".join(
                    f"{t}={int(m.sum())} voxels" for t, m in zip(pred.targets, pred.masks, strict=True)
                ),
            )
        written.extend(clinical.finish(out))
    return written

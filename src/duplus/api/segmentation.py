"""Segmentation as Python functions: :func:`segment` in memory, :func:`segment_files` on disk.

``duplus segment`` is :func:`segment_files`; a Python user calls the same function, or
:func:`segment` to get nibabel images back without touching the disk::

    import duplus

    result = duplus.segment("ct.nii.gz", ["liver", "spleen"], modality="CT", region="abdomen",
                            checkpoint="runs/demo/train/checkpoint_best.pt")
    result.masks["liver"].to_filename("liver.nii.gz")   # uint8, the input's own grid

Loading a model is the slow part: build it once with :func:`load_predictor` and pass
``predictor=`` to segment many images.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nibabel as nib
import numpy as np

from duplus.api.clinical_outputs import ClinicalOutputs
from duplus.data.io import Volume, is_nifti, load_channels, load_image, volume_from_image
from duplus.errors import InputError
from duplus.fileio import OutputFolder

if TYPE_CHECKING:
    from duplus.inference.predictor import Prediction, Predictor

logger = logging.getLogger(__name__)

ImageLike = str | Path | nib.Nifti1Image | Volume | Sequence[str | Path]
"""A NIfTI file, a DICOM series folder, a nibabel image, a :class:`Volume`, or the channel files
of one case (PET then CT for PET/CT)."""

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})$")
PROBABILITIES_SUFFIX = "_probabilities.nii.gz"


@dataclass
class Segmentation:
    """The result of :func:`segment`, on the input's own grid.

    Attributes:
        masks: target -> uint8 mask image (the input's shape and affine).
        labels: label value -> target, the values of :meth:`label_map`.
        prompts: the T1 prompt and the T2 prompt used for each target.
        probabilities: target -> float32 probability image, when asked for.
    """

    masks: dict[str, nib.Nifti1Image]
    labels: dict[int, str]
    prompts: dict[str, Any] = field(default_factory=dict)
    probabilities: dict[str, nib.Nifti1Image] | None = None

    def label_map(self) -> nib.Nifti1Image:
        """One multi-label image (values as :attr:`labels`); where targets overlap the smaller
        predicted structure wins (a tumour inside its organ keeps its label)."""
        from duplus.inference.postprocess import merge_to_multilabel

        first = next(iter(self.masks.values()))
        stack = np.stack([np.asarray(m.dataobj) for m in self.masks.values()])
        label_map, _ = merge_to_multilabel(stack)
        return nib.Nifti1Image(label_map, first.affine)


def as_volume(image: ImageLike) -> Volume:
    """Read or wrap any :data:`ImageLike` as a :class:`Volume`."""
    if isinstance(image, Volume):
        return image
    if isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        return volume_from_image(image)
    if isinstance(image, str | Path):
        return load_image(image)
    paths = [Path(p) for p in image]
    return load_channels(paths) if len(paths) > 1 else load_image(paths[0])


def load_predictor(
    checkpoint: str | Path,
    *,
    adapter: str | Path | None = None,
    device: str = "auto",
    allow_download: bool = False,
) -> Predictor:
    """A :class:`~duplus.inference.predictor.Predictor` for a checkpoint, a merged adaptation, or a
    base checkpoint with an adapter file from ``duplus adapt``.

    Args:
        checkpoint: a DuPLUS checkpoint, a ``.duplus`` bundle, a run folder or the name of an
            installed model (:func:`duplus.bundles.store.resolve_checkpoint`).
        adapter: an adapter file (or adapter bundle) tied to ``checkpoint``.
        device: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda[:N]`` or ``mps``.
        allow_download: let a checkpoint naming a hub text encoder fetch it.
    """
    from duplus.bundles.store import resolve_adapter, resolve_checkpoint
    from duplus.checkpoint import load_checkpoint
    from duplus.inference.predictor import Predictor

    checkpoint = resolve_checkpoint(checkpoint)
    adapter = resolve_adapter(adapter) if adapter is not None else None
    if adapter is None and not load_checkpoint(checkpoint).get("prompt_overrides"):
        return Predictor.from_checkpoint(checkpoint, device=device, allow_download=allow_download)
    from duplus.adapt.adapter_file import load_adapted_predictor

    return load_adapted_predictor(checkpoint, adapter, device=device, allow_download=allow_download)


def check_segment_options(
    modality: str,
    region: str,
    targets: Sequence[str],
    overlap: float | None,
    sw_batch_size: int,
    threshold: float,
    precision: str = "auto",
) -> tuple[str, str, list[str]]:
    """Refuse bad prompts and options before any heavy work.

    Returns:
        The normalised modality, the cleaned region and the cleaned targets.

    Raises:
        InputError: an unknown modality; an empty, whitespace-only or over-long region or target;
            duplicate targets; overlap outside ``[0, 1)``; a window batch below 1; a threshold
            outside ``[0, 1]``; an unknown precision.
    """
    from duplus.inference.predictor import MAX_PROMPT_CHARS, clean_targets
    from duplus.inference.runtime import PRECISIONS
    from duplus.vocab import normalise_modality

    modality = normalise_modality(modality, source="--modality")
    region_text = " ".join(str(region).split())
    if not region_text:
        raise InputError("--region", "empty or whitespace-only region")
    if len(region_text) > MAX_PROMPT_CHARS:
        raise InputError("--region", f"region of {len(region_text)} characters; at most {MAX_PROMPT_CHARS}")
    cleaned = clean_targets(list(targets))
    if overlap is not None and not 0.0 <= float(overlap) < 1.0:
        raise InputError("--overlap", f"must be in [0, 1), got {overlap}")
    if int(sw_batch_size) < 1:
        raise InputError("--sw-batch-size", f"must be at least 1, got {sw_batch_size}")
    if not 0.0 <= float(threshold) <= 1.0:
        raise InputError("--threshold", f"must be in [0, 1], got {threshold}")
    if precision not in PRECISIONS:
        raise InputError(
            "--precision", f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}"
        )
    return modality, region_text, cleaned


def segment(
    image: ImageLike,
    targets: Sequence[str],
    *,
    modality: str,
    region: str,
    checkpoint: str | Path | None = None,
    predictor: Predictor | None = None,
    adapter: str | Path | None = None,
    device: str = "auto",
    overlap: float | None = None,
    sw_batch_size: int = 2,
    tta: bool = False,
    threshold: float = 0.5,
    probabilities: bool = False,
    allow_download: bool = False,
    fast: bool = False,
    precision: str = "auto",
    exact_prompts: bool = False,
) -> Segmentation:
    """Segment one image for text-named targets; nothing is written to disk.

    Args:
        image: a NIfTI path, a DICOM series folder, a nibabel image, a :class:`Volume`, or the
            channel files of one case (PET/CT: PET first, then CT).
        targets: target names (free text), e.g. ``["liver", "left kidney"]``.
        modality: CT, MRI, PET or PETCT (chooses the stem and the T1 prompt).
        region: body region for the T1 prompt, e.g. ``"abdomen"``.
        checkpoint: a DuPLUS checkpoint (or pass ``predictor``).
        predictor: a loaded predictor (:func:`load_predictor`), to segment many images.
        adapter: an adapter file for ``checkpoint``.
        device: where the network runs.
        overlap: sliding-window overlap (``None``: 0.5, or 0.25 with ``fast``).
        sw_batch_size: windows per forward pass.
        tta: mirroring test-time augmentation (models trained with ``mirror_axes`` only).
        threshold: probability threshold of the masks.
        probabilities: also return the probability maps.
        allow_download: let a checkpoint naming a hub text encoder fetch it.
        fast: the fast path (:mod:`duplus.inference.runtime`): native bfloat16 where the device
            has it, channels-last, overlap 0.25, air windows skipped.
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16``.
        exact_prompts: send each target text to the model exactly as written. By default a text
            is resolved to a trained target first (a synonym, misspelling or close paraphrase is
            prompted by the trained name; one naming nothing the model knows gets a warning and
            an empty mask); ``prompts["targets"]`` of the result says how each was resolved.

    Returns:
        :class:`Segmentation` with one mask per target on the input's grid.
    """
    modality, region, cleaned = check_segment_options(
        modality, region, targets, overlap, sw_batch_size, threshold, precision
    )
    volume = as_volume(image)
    if predictor is None:
        if checkpoint is None:
            raise InputError("--checkpoint", "pass a checkpoint or a loaded predictor")
        predictor = load_predictor(checkpoint, adapter=adapter, device=device, allow_download=allow_download)
    pred = predictor.predict(
        volume,
        modality,
        region,
        cleaned,
        overlap=overlap,
        sw_batch_size=sw_batch_size,
        tta=tta,
        threshold=threshold,
        fast=fast,
        precision=precision,
        probabilities=probabilities,
        exact_prompts=exact_prompts,
    )
    return _as_segmentation(pred, probabilities)


def _as_segmentation(pred: Prediction, probabilities: bool) -> Segmentation:
    masks = {t: nib.Nifti1Image(pred.masks[k], pred.affine) for k, t in enumerate(pred.targets)}
    probs = (
        {t: nib.Nifti1Image(pred.probability(k), pred.affine) for k, t in enumerate(pred.targets)}
        if probabilities
        else None
    )
    labels = {k + 1: t for k, t in enumerate(pred.targets)}
    return Segmentation(masks=masks, labels=labels, prompts=pred.prompts, probabilities=probs)


# ---------------------------------------------------------------------- files
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
    Hidden files are ignored.
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
    niftis = sorted(p for p in path.iterdir() if p.is_file() and is_nifti(p) and not p.name.startswith("."))
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


def planned_outputs(
    case: str, *, ml: bool, save_probabilities: bool, clinical: ClinicalOutputs | None = None
) -> list[str]:
    """The names (relative to the output folder) ``segment_files`` writes for ``case``; a name
    ending in ``/`` is a folder."""
    clinical = clinical or ClinicalOutputs()
    names: list[str] = []
    if clinical.writes_nifti_masks:
        names = [f"{case}.nii.gz", "labels.json"] if ml else [f"{case}/"]
    names += clinical.planned_names(case)
    if save_probabilities:
        names.append(f"{case}{PROBABILITIES_SUFFIX}")
    return names


def _check_planned(
    folder: OutputFolder,
    cases: dict[str, list[Path]],
    *,
    ml: bool,
    save_probabilities: bool,
    clinical: ClinicalOutputs,
) -> None:
    """Before any work: no output may be or hold an input, two cases must not write the same
    file, and nothing else may be in the way."""
    inputs = [p.resolve() for files in cases.values() for p in files]
    owner: dict[str, str] = {}
    for case in cases:
        for name in planned_outputs(case, ml=ml, save_probabilities=save_probabilities, clinical=clinical):
            dest = (folder.root / name.rstrip("/")).resolve()
            for src in inputs:
                if dest == src or dest in src.parents:
                    raise InputError(
                        folder.root,
                        f"writing {dest} would replace the input {src}; choose another output folder",
                    )
            if name == "labels.json":
                continue  # shared by every case of an --ml run
            key = name.rstrip("/")
            if key in owner:
                raise InputError(
                    folder.root / key, f"cases {owner[key]!r} and {case!r} would both write it; rename one"
                )
            owner[key] = case
            if name.endswith("/"):
                folder.check_new_folder(folder.root / key)
            else:
                folder.check_write(folder.root / key)
    if ml:
        folder.check_write(folder.root / "labels.json")
    for name in clinical.run_names():
        folder.check_write(folder.root / name)


def segment_files(
    input: str | Path,
    output: str | Path,
    targets: Sequence[str],
    *,
    modality: str,
    region: str,
    checkpoint: str | Path,
    adapter: str | Path | None = None,
    ml: bool = False,
    save_probabilities: bool = False,
    overwrite: bool = False,
    device: str = "auto",
    overlap: float | None = None,
    sw_batch_size: int = 2,
    tta: bool = False,
    threshold: float = 0.5,
    allow_download: bool = False,
    progress: bool = True,
    fast: bool = False,
    precision: str = "auto",
    series_uid: str | None = None,
    allow_uneven: bool = False,
    output_type: str = "nifti",
    statistics: bool = False,
    preview: bool = False,
    exact_prompts: bool = False,
) -> list[Path]:
    """Segment a NIfTI file, a folder of them or a DICOM series; write the masks into ``output``.

    (Long only by its signature and this docstring: one argument per ``duplus segment`` option.)

    Writes ``output/<case>/<target>.nii.gz`` per target or, with ``ml``, ``output/<case>.nii.gz``
    and ``output/labels.json``; with ``save_probabilities`` also ``<case>_probabilities.nii.gz``.
    How each target text was resolved to a trained target (``exact_prompts``: see :func:`segment`)
    is logged and, with ``ml``, recorded in ``labels.json``.
    The write rule of :class:`~duplus.fileio.OutputFolder` holds: nothing that exists is replaced
    unless ``overwrite`` and duplus wrote it; an output folder inside an input is refused. Each case
    is assembled in a staging folder and moved into place when complete.

    DICOM input (a folder or ``.zip``): ``series_uid`` picks one of several series;
    ``allow_uneven`` resamples a stack with missing slices, uneven spacing or gantry tilt instead
    of refusing it. ``output_type="dicom-seg"`` writes ``<case>.seg.dcm`` instead of the NIfTI
    masks; ``statistics`` writes ``statistics.csv``; ``preview`` a ``<case>_preview.png`` each
    (:mod:`duplus.api.clinical_outputs`).

    ``fast`` picks the fast path (:mod:`duplus.inference.runtime`; ``overlap`` then defaults to
    0.25); ``precision`` is ``auto``, ``fp32``, ``bf16`` or ``fp16``. Probabilities are held as
    float16 on the model's grid unless ``save_probabilities`` (:mod:`duplus.inference.prediction`).

    Returns:
        The files and folders written.
    """
    from tqdm.auto import tqdm

    modality, region, cleaned = check_segment_options(
        modality, region, targets, overlap, sw_batch_size, threshold, precision
    )
    cases = discover_cases(input)
    clinical = ClinicalOutputs(output_type=output_type, statistics=statistics, preview=preview)
    clinical.check(cases, multilabel=ml)
    written: list[Path] = []
    with OutputFolder(output, inputs=[input], replace_owned=overwrite) as folder:
        _check_planned(folder, cases, ml=ml, save_probabilities=save_probabilities, clinical=clinical)
        predictor: Predictor | None = None
        for case, files in tqdm(cases.items(), desc="segment", disable=not progress):
            volume = (
                load_channels(files)
                if len(files) > 1
                else load_image(files[0], series_uid=series_uid, allow_uneven=allow_uneven)
            )
            if predictor is None:  # after the first image is known to be good
                predictor = load_predictor(
                    checkpoint, adapter=adapter, device=device, allow_download=allow_download
                )
            pred = predictor.predict(
                volume,
                modality,
                region,
                cleaned,
                overlap=overlap,
                sw_batch_size=sw_batch_size,
                tta=tta,
                threshold=threshold,
                fast=fast,
                precision=precision,
                probabilities=save_probabilities,
                exact_prompts=exact_prompts,
            )
            written += _write_case(
                folder,
                case,
                volume,
                pred,
                modality,
                ml=ml,
                save_probabilities=save_probabilities,
                clinical=clinical,
            )
        written.extend(clinical.finish(folder.root))
    return written


def _write_case(
    folder: OutputFolder,
    case: str,
    volume: Volume,
    pred: Prediction,
    modality: str,
    *,
    ml: bool,
    save_probabilities: bool,
    clinical: ClinicalOutputs,
) -> list[Path]:
    """Assemble one case's outputs in a staging folder, then move them into place."""
    from duplus.data.io import save_nifti
    from duplus.inference.postprocess import write_multilabel, write_per_target

    voxels = ", ".join(f"{t}={int(m.sum())} voxels" for t, m in zip(pred.targets, pred.masks, strict=True))
    logger.info("%s: %s", case, voxels)

    with folder.staging_folder() as stage:
        staged: dict[str, Path] = {}
        if not clinical.writes_nifti_masks:
            pass  # dicom-seg: the SEG below holds the masks
        elif ml:
            write_multilabel(stage, case, pred.targets, pred.masks, pred.affine, pred.prompts)
            staged = {f"{case}.nii.gz": stage / f"{case}.nii.gz", "labels.json": stage / "labels.json"}
        else:
            write_per_target(stage / "masks", pred.targets, pred.masks, pred.affine)
            staged = {case: stage / "masks"}
        for extra in clinical.write_case(
            stage, case, volume, pred.targets, pred.masks, pred.probability_maps(), modality
        ):
            staged[extra.name] = extra
        if save_probabilities:
            name = f"{case}{PROBABILITIES_SUFFIX}"
            assert pred.probabilities is not None  # predicted with probabilities=True
            staged[name] = save_nifti(pred.probabilities, pred.affine, stage / name)
        return [folder.install(src, folder.root / name) for name, src in staged.items()]

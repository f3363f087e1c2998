"""Library entry points behind ``duplus prognosis cv|train|predict``.

Image features come from a trained segmentation checkpoint: each patient's PET (or PET/CT) is
preprocessed like the segmentation data, passed once through the frozen backbone with the T1
prompt of the modality and "head and neck", and pooled (whole volume and inside the GTV mask when
there is one). The features are cached in the run folder; the prognosis model itself lives in
:mod:`duplus.prognosis.runs`, :mod:`duplus.prognosis.cv` and
:mod:`duplus.prognosis.model`.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from duplus.errors import ConfigError, InputError
from duplus.fileio import OutputFolder, check_literal_id, check_not_inside_inputs

logger = logging.getLogger(__name__)

REGION = "head and neck"
TUMOUR_PROMPTS = ("primary tumour", "lymph node")
"""T2 prompts whose union is the tumour mask with ``masks="predicted"``."""
MASK_SOURCES = ("auto", "given", "predicted")


def _feature_modality(ckpt: dict[str, Any], requested: str | None) -> str:
    """PET/CT when the checkpoint was trained on PET/CT data, else PET (the PET channel alone)."""
    if requested:
        return requested
    modalities = {d["modality"] for d in ckpt.get("datasets", [])}
    return "PETCT" if "PETCT" in modalities else "PET"


def _case_files(images: list[Path], modality: str) -> list[Path]:
    """PET/CT cases list PET then CT; for PET-only features keep the PET file."""
    return images[:1] if modality == "PET" else images


class _CaseLoader:
    """Preprocesses one patient on demand (image first, then its mask), keeping nothing after.

    The mask is the given label, or with a ``predictor`` the union of its masks for
    :data:`TUMOUR_PROMPTS` on the network's grid (the preprocessed grid).
    """

    def __init__(
        self, files: list[Path], mask_path: Path | None, modality: str, cfg: Any, predictor: Any = None
    ) -> None:
        self.files, self.mask_path, self.modality, self.cfg = files, mask_path, modality, cfg
        self.predictor = predictor
        self._label: np.ndarray | None = None
        self.tumour_ml = float("nan")

    def _predicted_mask(self, volume: Any, shape: tuple[int, ...]) -> np.ndarray:
        pred = self.predictor.predict(volume, self.modality, REGION, list(TUMOUR_PROMPTS))
        prob = pred.model_probabilities
        if prob is None or tuple(prob.shape[1:]) != shape:
            raise RuntimeError(
                f"predicted masks on grid {None if prob is None else prob.shape[1:]}, image {shape}"
            )
        return (prob >= 0.5).any(axis=0).astype(np.uint8)

    def image(self) -> np.ndarray:
        from duplus.data.io import load_channels, load_nifti
        from duplus.data.preprocess import preprocess_case
        from duplus.prognosis.features import tumour_volume_ml

        volume = load_channels(self.files)
        use_label = self.predictor is None and self.mask_path is not None
        lab = load_nifti(self.mask_path, is_label=True) if use_label and self.mask_path is not None else None
        pre = preprocess_case(volume, lab, self.modality, self.cfg)
        if self.predictor is not None:
            self._label = self._predicted_mask(volume, tuple(pre.image.shape[1:]))
        elif pre.label is not None:
            self._label = (pre.label > 0).astype(np.uint8)
        if self._label is not None:
            self.tumour_ml = tumour_volume_ml(self._label, self.cfg.spacing)
        image = np.zeros((2, *pre.image.shape[1:]), dtype=np.float32)  # the network takes 2 channels
        image[: pre.image.shape[0]] = pre.image
        return image

    def mask(self) -> np.ndarray:
        label, self._label = self._label, None
        if label is None:
            raise RuntimeError("mask() before image()")
        return label


def compute_cohort_features(
    cases: list[tuple[str, list[Path], Path | None]],
    checkpoint: str | Path,
    cache_path: str | Path,
    *,
    modality: str | None = None,
    device: str = "cpu",
    masks: str = "auto",
) -> Path:
    """Write image features of every ``(id, [PET, CT], mask or None)`` case to ``cache_path`` (.npz).

    The features are the same columns whatever the masks: whole-volume mean and max of the
    bottleneck, and its mean inside the tumour mask. ``masks``: ``given`` (every case needs its
    label), ``predicted`` (the segmentation model's own masks for :data:`TUMOUR_PROMPTS`) or
    ``auto`` (given when every case has one, else predicted).

    Returns:
        ``cache_path``; a second call with the same checkpoint, modality and input files (paths,
        sizes, modification times) reuses it.
    """
    import torch

    from duplus.checkpoint import load_checkpoint
    from duplus.inference.predictor import Predictor
    from duplus.prognosis.features import (
        extract_image_features,
        load_matching_feature_cache,
        save_feature_cache,
    )
    from duplus.vocab import t1_prompt

    ckpt = load_checkpoint(checkpoint)
    modality = _feature_modality(ckpt, modality)
    ids = [c[0] for c in cases]
    masks = _mask_source(cases, masks)
    fingerprint = _features_fingerprint(cases, checkpoint, modality) + f":masks={masks}"
    if load_matching_feature_cache(cache_path, fingerprint, ids) is not None:
        return Path(cache_path)
    predictor = Predictor.from_checkpoint(checkpoint, device=device)
    t1 = predictor.prompt_cache.get([t1_prompt(modality, REGION)])[0]
    seg = predictor if masks == "predicted" else None
    loaders = [
        _CaseLoader(_case_files(images, modality), mask_path, modality, predictor.preprocess, seg)
        for _, images, mask_path in cases
    ]
    feats = extract_image_features(
        predictor.model,
        [loader.image for loader in loaders],
        t1_embedding=t1,
        modality=modality,
        tumour_masks=[loader.mask for loader in loaders],
        ids=ids,
        device=torch.device(device),
    )
    from duplus.prognosis.features import image_feature_names

    save_feature_cache(
        cache_path,
        features=feats,
        ids=ids,
        names=image_feature_names(feats.shape[1] // 3, True),
        tumour_volume=np.asarray([loader.tumour_ml for loader in loaders]),
        fingerprint=fingerprint,
    )
    return Path(cache_path)


def _mask_source(cases: list[tuple[str, list[Path], Path | None]], masks: str) -> str:
    """``given`` or ``predicted`` for ``masks`` (``auto``: given when every case has a mask)."""
    if masks not in MASK_SOURCES:
        raise ConfigError(f"unknown mask source {masks!r}; expected one of {', '.join(MASK_SOURCES)}")
    missing = [pid for pid, _, m in cases if m is None]
    if masks == "auto":
        masks = "predicted" if missing else "given"
        logger.info("tumour masks for the image features: %s", masks)
    if masks == "given" and missing:
        raise InputError(
            None,
            f"no tumour mask for {len(missing)} patient(s) ({', '.join(missing[:3])}); use --masks predicted",
        )
    return masks


def _features_fingerprint(
    cases: list[tuple[str, list[Path], Path | None]], checkpoint: str | Path, modality: str
) -> str:
    """The checkpoint, the modality and every input file's path, size and modification time."""
    import hashlib

    def stat(path: Path) -> str:
        st = Path(path).stat()
        return f"{Path(path).resolve()}:{st.st_size}:{st.st_mtime_ns}"

    h = hashlib.sha1()
    for pid, images, mask in cases:
        h.update("|".join([pid, *map(stat, images), stat(mask) if mask is not None else "-"]).encode())
    return f"{stat(Path(checkpoint))}:{modality}:{h.hexdigest()}"


def hecktor_cases(folder: str | Path, split: str = "training") -> list[tuple[str, list[Path], Path | None]]:
    from duplus.data.specs.hecktor import read_hecktor_spec

    spec = read_hecktor_spec(folder)
    records = spec.training if split == "training" else spec.test
    return [(r.case_id, list(r.images), r.label) for r in records]


def folder_cases(images: str | Path, ids: list[str]) -> list[tuple[str, list[Path], Path | None]]:
    """Images matched by patient id in a folder: ``<id>__PT.nii.gz`` (+ ``__CT``) or ``<id>.nii.gz``."""
    root = Path(images)
    out: list[tuple[str, list[Path], Path | None]] = []
    for pid in ids:
        check_literal_id(pid, root)  # ids name files literally, never as patterns

        def named(stem: str) -> list[Path]:
            return [
                root / f"{stem}{ext}" for ext in (".nii.gz", ".nii") if (root / f"{stem}{ext}").is_file()
            ][:1]

        pet, ct, plain = named(f"{pid}__PT"), named(f"{pid}__CT"), named(pid)
        files = pet + ct if pet else plain
        if not files:
            raise InputError(root, f"no image for patient {pid} (expected {pid}__PT.nii.gz or {pid}.nii.gz)")
        out.append((pid, files, None))
    return out


@dataclass
class PrognosisRequest:
    """What ``duplus prognosis cv|train|predict`` was asked (the CLI's arguments, typed).

    Attributes:
        action: ``cv`` | ``train`` | ``predict``.
        out: output folder (cv/train) or predictions CSV (predict).
        hecktor: a HECKTOR 2022-layout folder; clinical: a clinical CSV (one of the two).
        id_col, time_col, event_col: the CSV's patient id, follow-up time and event (0/1) columns.
        images: folder of images matched by patient id (a generic cohort with image modes).
        checkpoint: segmentation model whose features the image modes use.
        mode: the mode ``train`` fits; modes: the modes ``cv`` compares (``None`` = by inputs).
        config: a prognosis YAML; folds, repeats: overrides of it for ``cv``.
        model: the folder ``train`` wrote (for ``predict``).
        masks: tumour masks of the image features: ``given``, ``predicted`` or ``auto``
            (:func:`compute_cohort_features`).
        preset: text-path settings (:data:`duplus.prognosis.config.PRESETS`; ``auto`` by device);
            keys the ``config`` file sets win over the preset.
    """

    action: str
    out: str | Path
    hecktor: str | Path | None = None
    clinical: str | Path | None = None
    id_col: str = "PatientID"
    time_col: str = "RFS"
    event_col: str = "Relapse"
    images: str | Path | None = None
    checkpoint: str | Path | None = None
    mode: str = "both"
    modes: tuple[str, ...] | None = None
    config: str | Path | None = None
    folds: int | None = None
    repeats: int | None = None
    model: str | Path | None = None
    preset: str = "cpu"
    masks: str = "auto"


def _features_for(req: PrognosisRequest, out: Path, ids: list[str] | None, split: str) -> Path:
    """Image features of the cohort named by ``--hecktor`` or ``--images``, from ``-c CHECKPOINT``."""
    if not req.checkpoint:
        raise ConfigError("image modes need features from a segmentation model: pass -c CHECKPOINT")
    if req.hecktor:
        cases = hecktor_cases(req.hecktor, split)
    elif req.images:
        if ids is None:
            raise ConfigError("--images needs the clinical CSV's patient ids")
        cases = folder_cases(req.images, ids)
    else:
        raise ConfigError("image modes need images: pass --hecktor FOLDER or --images FOLDER")
    out.mkdir(parents=True, exist_ok=True)
    return compute_cohort_features(cases, req.checkpoint, out / "image_features.npz", masks=req.masks)


def run_cohort_cv(
    hecktor: str | Path,
    checkpoint: str | Path,
    out: str | Path,
    *,
    km_figure: Path | None = None,
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
    masks: tuple[str, ...] = ("given", "predicted"),
) -> dict[str, Any]:
    """Cross-validate on a HECKTOR-layout cohort (the demo's experiment), on the same folds:

    * ``ehr-text`` (the record as text only) vs ``ehr`` (text + clinical columns), and ``ehr``
      without the free-text notes column (what the notes add);
    * ``image`` and ``both`` with image features pooled in the given masks and in the
      segmentation model's own predicted masks (``masks``), beside CoxPH baselines (with the
      tumour volume of those masks).
    """
    import shutil

    from duplus.prognosis.ehr import hecktor_template
    from duplus.prognosis.runs import load_prognosis_cfg, run_prognosis_cv

    out = Path(out)
    cfg = load_prognosis_cfg(dict(overrides or {}))
    runs: list[tuple[str, Any]] = [
        ("", run_prognosis_cv(hecktor, out / "ehr", config=cfg, modes=("ehr-text", "ehr")))
    ]
    no_notes = load_prognosis_cfg(dict(overrides or {}))
    no_notes.ehr = hecktor_template()
    no_notes.ehr.text_columns = []
    plain = run_prognosis_cv(
        hecktor, out / "ehr_no_notes", config=no_notes, modes=("ehr",), baseline=False, plot=False
    )
    runs.append((" (no notes)", plain))
    cases = hecktor_cases(hecktor)
    for source in masks:
        feats = compute_cohort_features(cases, checkpoint, out / f"image_features_{source}.npz", masks=source)
        summary = run_prognosis_cv(
            hecktor, out / f"masks_{source}", config=cfg, modes=("image", "both"), features=feats
        )
        summary = summary[summary["mode"] != "cox_clinical"]  # the same as in the ehr run
        runs.append((f" ({source} masks)", summary))
    rows = [
        {**r, "mode": f"{r['mode']}{suffix}"}
        for suffix, table in runs
        for r in table.to_dict(orient="records")
    ]
    result: dict[str, Any] = {"summary": rows, "markdown": _cohort_markdown(rows, cfg)}
    km = out / f"masks_{masks[0]}" / "km_both.png" if masks else out / "ehr" / "km_ehr.png"
    if km_figure is not None and km.exists():
        km_figure.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(km, km_figure)
        result["km_figure"] = str(km_figure)
    return result


def _cohort_markdown(rows: list[dict[str, Any]], cfg: Any) -> str:
    """One table of every run of :func:`run_cohort_cv` (mean ± sd over the outer test folds)."""

    def ms(r: dict[str, Any], key: str) -> str:
        mean, sd = (r["mean"], r["sd"]) if key == "c" else (r.get(f"{key}_mean"), r.get(f"{key}_sd"))
        return f"{mean:.3f} ± {sd:.3f}" if mean is not None else "-"

    lines = [
        f"{cfg.folds}-fold CV x {cfg.repeats}, the same folds for every row; mean ± sd over the test folds.",
        "",
        "| model | Harrell's C | Uno's C | IBS | AUC(t) |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['mode']} | {ms(r, 'c')} | {ms(r, 'uno_c')} | {ms(r, 'ibs')} | {ms(r, 'auc')} |" for r in rows
    ]
    return "\n".join(lines)


def _config_with_preset(req: PrognosisRequest) -> Any:
    """The run's :class:`PrognosisConfig`: defaults, then the preset, then the ``--config`` file."""
    from duplus.config import load_yaml
    from duplus.device import select_device
    from duplus.prognosis import runs
    from duplus.prognosis.config import PrognosisConfig, apply_preset

    cfg = runs.load_prognosis_cfg(req.config)
    given: dict[str, Any] = {}
    if req.config:
        raw = load_yaml(req.config)
        given = raw.get("prognosis", raw) if isinstance(raw.get("prognosis"), dict) else raw
    preset = apply_preset(PrognosisConfig(), req.preset, str(select_device("auto")))
    for key in ("lora_r", "lora_alpha", "lora_dropout", "lora_targets", "epochs"):
        if key not in given:
            setattr(cfg, key, getattr(preset, key))
    cfg.mode = req.mode
    if req.folds:
        cfg.folds = req.folds
    if req.repeats:
        cfg.repeats = req.repeats
    return cfg


def _install(folder: Any, stage: Path) -> None:
    """Move everything a finished run assembled in ``stage`` into the output folder."""
    for item in sorted(stage.iterdir()):
        folder.install(item, folder.root / item.name)


def run_prognosis_command(req: PrognosisRequest) -> str:
    """Run ``duplus prognosis cv|train|predict``; returns what the command prints.

    ``cv`` and ``train`` assemble their outputs in a staging folder inside ``out`` and move them
    in when done, so an interrupted run leaves no result files (a cached image-features file of an
    earlier run is reused).

    The write rule holds (:class:`~duplus.fileio.OutputFolder`): ``cv`` and ``train`` write only
    inside ``out`` and replace only what an earlier duplus run wrote there; ``predict`` writes its
    one CSV, which may be neither an input nor a file duplus did not write.
    """
    data = req.hecktor or req.clinical
    if not data:
        raise ConfigError("pass --hecktor FOLDER or --clinical CSV")
    if req.action == "predict":
        inputs = [Path(p) for p in (req.hecktor, req.clinical, req.images, req.config, req.model) if p]
        out = Path(req.out)
        check_not_inside_inputs(out, inputs)
        with OutputFolder(out.absolute().parent, inputs=inputs, replace_owned=True, name="folder of --out"):
            return _run(req, data)
    return _run(req, data)


def _run(req: PrognosisRequest, data: str | Path) -> str:
    """The body of :func:`run_prognosis_command`, inside its output folder."""
    from duplus.prognosis import runs

    cols: dict[str, Any] = {"id_col": req.id_col, "time_col": req.time_col, "event_col": req.event_col}
    ids = None
    if req.clinical and req.images:  # predict reads a CSV without endpoints
        endpoints = {} if req.action != "predict" else {"time_col": None, "event_col": None}
        ids = runs.load_cohort(req.clinical, **{**cols, **endpoints})[0]["id"].tolist()
    if req.action == "predict":
        return _predict_command(req, data, ids)
    cfg = _config_with_preset(req)
    inputs = [Path(x) for x in (data, req.images, req.config) if x]
    with (
        OutputFolder(req.out, inputs=inputs, replace_owned=True, name="--out") as folder,
        folder.staging_folder() as stage,
    ):
        cache = folder.root / "image_features.npz"
        if cache.is_file() and folder.owns(cache):
            import shutil

            shutil.copyfile(cache, stage / cache.name)
        if req.action == "cv":
            modes = tuple(
                req.modes or (("ehr", "ehr-text", "image", "both") if req.checkpoint else ("ehr", "ehr-text"))
            )
            feats = (
                _features_for(req, stage, ids, "training")
                if any(m in ("image", "both") for m in modes)
                else None
            )
            runs.run_prognosis_cv(data, stage, config=cfg, modes=modes, features=feats, **cols)
            text = (stage / "cv_summary.md").read_text()
        else:
            feats = _features_for(req, stage, ids, "training") if cfg.mode in ("image", "both") else None
            runs.run_prognosis_train(data, stage, config=cfg, features=feats, **cols)
            text = f"prognosis model written to {folder.root / 'model'}"
        _install(folder, stage)
    return text


def _predict_command(req: PrognosisRequest, data: str | Path, ids: list[str] | None) -> str:
    from duplus.prognosis import runs
    from duplus.prognosis.model import load_prognosis_config

    if req.model is None:
        raise ConfigError("predict needs --model FOLDER (written by `duplus prognosis train`)")
    mode = load_prognosis_config(req.model).mode
    with tempfile.TemporaryDirectory(prefix="duplus-features-") as tmp, OutputFolder(tmp, name="scratch"):
        feats = _features_for(req, Path(tmp), ids, "testing") if mode in ("image", "both") else None
        path = runs.run_prognosis_predict(req.model, data, Path(req.out), features=feats, id_col=req.id_col)
    return f"predictions written to {path}"

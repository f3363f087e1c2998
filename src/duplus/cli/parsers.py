"""The ``duplus`` argument parser: one small function per sub-command."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from duplus import __version__
from duplus.cli import commands

CHECKPOINT_HELP = (
    "checkpoint (.pt), model bundle (.duplus), run folder (checkpoint_best.pt, else checkpoint_last.pt) "
    "or the NAME of an installed model (`duplus models`)"
)


def _command(
    sub: Any, name: str, help_: str, func: Callable[[argparse.Namespace], int]
) -> argparse.ArgumentParser:
    """A sub-command with the common ``-q/--quiet`` option, dispatching to ``func``."""
    p = sub.add_parser(name, help=help_, description=help_)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars; warnings and errors only")
    p.set_defaults(func=func)
    return p


def _add_demo(sub: Any) -> None:
    p = _command(
        sub,
        "demo",
        "embedded default: phantoms, training, prompted segmentation, experiments, report",
        commands.cmd_demo,
    )
    p.add_argument("--out", default="runs/demo", help="run folder (default: runs/demo)")
    p.add_argument("--quick", action="store_true", help="smoke version, about 2 minutes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--iterations", type=int, default=None, help="training steps (default: 900; 12 with --quick)"
    )


def _add_make_phantoms(sub: Any) -> None:
    p = _command(
        sub,
        "make-phantoms",
        "write the synthetic CT/MRI/PET phantom collection (MSD layout)",
        commands.cmd_make_phantoms,
    )
    p.add_argument("out", help="output folder")
    p.add_argument("--cases", type=int, default=8, help="training cases per dataset")
    p.add_argument("--test-cases", type=int, default=2, help="held-out cases per dataset")
    p.add_argument(
        "--dataset-cases",
        action="append",
        type=commands.dataset_cases,
        metavar="TASK=TRAIN[,TEST]",
        help="training (and held-out) cases of one dataset, e.g. Task02_PhantomPancreasCT=96,24; repeatable",
    )
    p.add_argument("--shape", type=int, default=96, help="grid of the isotropic cases (96 -> 1 mm voxels)")
    p.add_argument("--cohort", type=int, default=0, help="patients in the HECKTOR-layout prognosis cohort")
    p.add_argument("--seed", type=int, default=0, help="seed of the training cases")
    p.add_argument(
        "--test-seed",
        type=int,
        default=None,
        help="seed of the held-out cases and the cohort, a stream apart from training (default: --seed);"
        " report test figures only on a test seed no setting was chosen on",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="cases rendered in parallel processes (same files for any number)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace dataset folders an earlier make-phantoms wrote"
    )
    p.add_argument(
        "--anatomy",
        choices=("phantoms", "mni152"),
        default="phantoms",
        help="phantoms: the drawn CT/MRI/PET collection; mni152: synthetic head MRI of random contrast"
        " from the real MNI152 tissue maps (needs nilearn: pip install 'duplus[synth]')",
    )
    p.add_argument(
        "--mri-appearance",
        choices=("fixed", "random"),
        default="fixed",
        help="phantom MRI intensities: the T1-weighted table, or a random contrast, bias, noise, blur"
        " and slice thickness per case",
    )
    p.add_argument(
        "--spacing",
        type=float,
        default=None,
        help="--anatomy mni152: voxel size in mm (default 2 -> 96x112x96)",
    )


def _add_prepare(sub: Any) -> None:
    p = _command(
        sub,
        "prepare",
        "resample, normalise and cache datasets once (MSD, nnU-Net, YAML, HECKTOR)",
        commands.cmd_prepare,
    )
    p.add_argument("datasets", nargs="+", help="dataset.json files, dataset folders or YAML specs")
    p.add_argument("--out", required=True, help="cache folder")
    p.add_argument("--config", help="YAML with preprocessing options (PreprocessConfig)")
    p.add_argument("--spacing", nargs=3, type=float, metavar=("X", "Y", "Z"), help="target spacing in mm")
    p.add_argument("--modality", help="override the dataset's modality (CT, MRI, PET, PETCT)")
    p.add_argument("--region", help="body region, when the dataset does not name one (e.g. abdomen)")
    p.add_argument("--include-test", action="store_true", help="also prepare the unlabelled test images")


def _add_train(sub: Any) -> None:
    p = _command(
        sub,
        "train",
        "multi-dataset, partial-label training from a YAML config (torchrun for DDP)",
        commands.cmd_train,
    )
    p.add_argument("--config", help="training YAML (see configs/)")
    p.add_argument("--out", help="run folder")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. iterations=200"
    )


def _add_segment(sub: Any) -> None:
    p = _command(sub, "segment", "segment NIfTI/DICOM images for targets named by text", commands.cmd_segment)
    p.add_argument(
        "-i",
        "--input",
        required=True,
        help="NIfTI file, folder of NIfTI files, DICOM series folder, or .zip of a DICOM series",
    )
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("-c", "--checkpoint", required=True, help=CHECKPOINT_HELP)
    p.add_argument("--modality", required=True, help="CT, MRI, PET or PETCT")
    p.add_argument("--region", required=True, help="body region for the T1 prompt, e.g. abdomen")
    p.add_argument(
        "--targets", nargs="+", required=True, help='target names (free text), e.g. liver "left kidney"'
    )
    p.add_argument(
        "--adapter",
        help="adapter from `duplus adapt`: its file, its run folder, or an installed adapter NAME",
    )
    p.add_argument("--ml", action="store_true", help="one multi-label map per case plus labels.json")
    p.add_argument(
        "--exact-prompts",
        action="store_true",
        help="send each target text as written; by default a text is read as the trained target it names"
        " (synonym, misspelling, close paraphrase) and one naming no trained target gets an empty mask",
    )
    p.add_argument(
        "--tta",
        action="store_true",
        help="mirroring test-time augmentation, over the axes the model was trained to mirror (train config mirror_axes)",
    )
    p.add_argument(
        "--fast",
        action="store_true",
        help="fast mode: bf16 where the CPU/GPU has it natively, channels-last, overlap 0.25, air windows skipped",
    )
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="numeric precision of the network (auto: fp32 on the CPU, bf16 with --fast where native; bf16 on CUDA)",
    )
    p.add_argument(
        "--overlap", type=float, default=None, help="sliding-window overlap (default 0.5; 0.25 with --fast)"
    )
    p.add_argument("--sw-batch-size", type=int, default=2)
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps")
    p.add_argument("--save-probabilities", action="store_true", help="also write float probability maps")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace outputs an earlier duplus run wrote in OUTPUT (never files duplus did not write)",
    )
    p.add_argument(
        "--allow-download",
        action="store_true",
        help="let a checkpoint that names a Hugging Face hub text encoder download it",
    )
    p.add_argument("--series-uid", help="the DICOM series to read when the input folder holds several")
    p.add_argument(
        "--allow-uneven",
        action="store_true",
        help="resample a DICOM series with missing slices, uneven spacing or gantry tilt (refused otherwise)",
    )
    p.add_argument(
        "--output-type",
        choices=("nifti", "dicom-seg"),
        default="nifti",
        help="NIfTI masks (default) or one DICOM-SEG per case referencing the source series (DICOM input)",
    )
    p.add_argument(
        "--statistics", action="store_true", help="write statistics.csv (volume, intensity, probability)"
    )
    p.add_argument("--preview", action="store_true", help="write a PNG overlay per case")


def _add_evaluate(sub: Any) -> None:
    p = _command(
        sub, "evaluate", "Dice, HD95 and NSD per case and target (CSV + Markdown)", commands.cmd_evaluate
    )
    p.add_argument("--pred", required=True, help="folder of predictions (per-target masks or --ml maps)")
    p.add_argument("--ref", required=True, help="folder of reference label maps or masks")
    p.add_argument("--labels", help="labels.json / dataset.json naming the reference label values")
    p.add_argument("--out", required=True, help="output folder for metrics.csv and metrics.md")
    p.add_argument("--nsd-tolerance", type=float, default=2.0, help="NSD tolerance in mm")
    p.add_argument(
        "--overwrite", action="store_true", help="replace metrics an earlier duplus evaluate wrote"
    )


def _add_adapt(sub: Any) -> None:
    p = _command(
        sub,
        "adapt",
        "parameter-efficient adaptation (frozen backbone, LoRA/head) to a new task",
        commands.cmd_adapt,
    )
    p.add_argument("-c", "--checkpoint", required=True, help="base model: " + CHECKPOINT_HELP)
    p.add_argument("--config", required=True, help="adaptation YAML")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--merge", action="store_true", help="also write a standalone merged checkpoint")


PROGNOSIS_EPILOG = """modes:
  ehr       clinical columns (numbers imputed + standardised, categories one-hot) + the record written
            as text (frozen text encoder, embedded once per cohort), ridge Cox head; penalty and
            text weight chosen by inner CV on the training fold. 1-25 s per fold on 2 shared CPU
            cores for 137-1151 patients (docs/PROGNOSIS.md).
  ehr-text  the record as text only (the paper's path; an ablation). --preset cpu: frozen encoder,
            1-4 s per fold; --preset paper: LoRA r=32 on every encoder layer, 20 epochs: about
            25 min per fold of a few hundred patients on 2 CPU cores (use a GPU).
  image     image features pooled from a segmentation model (-c) inside the tumour masks.
  both      ehr + image features (ridge Cox head, image weight chosen by inner CV).
Every run writes into a staging folder inside --out and moves the results in at the end: an
interrupted run leaves no result files."""


def _add_prognosis(sub: Any) -> None:
    p = _command(
        sub,
        "prognosis",
        "survival risk from image + EHR (text + clinical columns): cv, train, predict",
        commands.cmd_prognosis,
    )
    psub = p.add_subparsers(dest="prognosis_command", metavar="ACTION", required=True)
    modes = ("ehr", "ehr-text", "image", "both")
    for action, help_ in (
        ("cv", "k-fold cross-validation per mode beside a CoxPH baseline (Harrell/Uno C, IBS, AUC)"),
        ("train", "train one prognosis model on the whole cohort"),
        ("predict", "write PatientID,Prediction (risk) for a cohort"),
    ):
        q = psub.add_parser(
            action,
            help=help_,
            description=help_,
            epilog=PROGNOSIS_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        q.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
        q.add_argument("--hecktor", help="HECKTOR 2022-layout folder (images, masks, clinical CSVs)")
        q.add_argument("--clinical", help="clinical CSV (generic cohort): one row per patient")
        q.add_argument(
            "--id-col", default="PatientID", help="CSV column of the patient id (default: %(default)s)"
        )
        q.add_argument(
            "--time-col",
            default="RFS",
            help="CSV column of the follow-up time, any unit (default: %(default)s)",
        )
        q.add_argument(
            "--event-col",
            default="Relapse",
            help="CSV column of the event indicator: 1 = event (relapse/death) observed, 0 = censored (default: %(default)s)",
        )
        q.add_argument("--images", help="folder of images matched by id (generic cohort)")
        q.add_argument("-c", "--checkpoint", help="segmentation model for image features: " + CHECKPOINT_HELP)
        q.add_argument(
            "--mode", choices=modes, default="ehr", help="model trained by `train` (default: %(default)s)"
        )
        q.add_argument("--config", help="prognosis YAML (PrognosisConfig)")
        q.add_argument(
            "--masks",
            choices=("auto", "given", "predicted"),
            default="auto",
            help="tumour masks the image features are pooled in: given (the cohort's labels), predicted "
            "(the segmentation model's own masks for 'primary tumour' + 'lymph node'; one segmentation "
            "per patient), auto = given when every patient has one (default)",
        )
        q.add_argument(
            "--preset",
            choices=("auto", "cpu", "paper"),
            default="cpu",
            help="text path settings: cpu = frozen text encoder (default); paper = LoRA r=32 on all layers, "
            "20 epochs (hours on a CPU); auto = paper on a GPU, else cpu. Applied before --config",
        )
        q.add_argument("--out", required=True, help="output folder (train/cv) or CSV file (predict)")
        if action == "cv":
            q.add_argument(
                "--modes",
                nargs="+",
                choices=modes,
                help="modes to compare (default: ehr ehr-text, plus image both with -c)",
            )
            q.add_argument("--folds", type=int, help="number of folds")
            q.add_argument("--repeats", type=int, help="repeats over seeds")
        if action == "predict":
            q.add_argument("--model", required=True, help="folder written by `duplus prognosis train`")
    p.set_defaults(func=commands.cmd_prognosis)


def _add_export(sub: Any) -> None:
    p = _command(
        sub,
        "export",
        "write a checkpoint or adapter as one .duplus bundle with a model card",
        commands.cmd_export,
    )
    p.add_argument("-c", "--checkpoint", required=True, help=CHECKPOINT_HELP + "; or an adapter file")
    p.add_argument("-o", "--output", required=True, help="bundle file to write (.duplus)")
    p.add_argument(
        "--dtype",
        choices=("float32", "float16"),
        default="float32",
        help="weight storage (float16: half the size)",
    )
    p.add_argument("--name", help="model name in the card (default: the bundle's file name)")


def _add_import(sub: Any) -> None:
    p = _command(
        sub,
        "import",
        "install a .duplus bundle under $DUPLUS_HOME/models/NAME (default ~/.duplus)",
        commands.cmd_import,
    )
    p.add_argument("bundle", help=".duplus file from `duplus export`")
    p.add_argument("--name", help="install under this name (default: the name in its card)")
    p.add_argument("--overwrite", action="store_true", help="replace a model of that name installed earlier")


def _add_models(sub: Any) -> None:
    _command(sub, "models", "list installed and packaged models", commands.cmd_models)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="duplus",
        description="DuPLUS: text-prompted universal 3D medical image segmentation and prognosis.",
    )
    parser.add_argument("--version", action="version", version=f"duplus {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (
        _add_demo, _add_make_phantoms, _add_prepare, _add_train, _add_segment, _add_evaluate,
        _add_adapt, _add_prognosis, _add_export, _add_import, _add_models,
    ):  # fmt: skip
        add(sub)
    return parser

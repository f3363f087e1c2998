"""The demo's steps, each a small function over library code (see :func:`duplus.demo.run_demo`)."""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from duplus.config import TrainConfig, from_dict, load_yaml
from duplus.data.specs import DatasetSpec, load_dataset_spec
from duplus.demo.experiments import evaluate_test_set, organ_control, paraphrase_robustness, t1_mismatch
from duplus.demo.settings import DemoSettings
from duplus.fileio import remove_output
from duplus.inference.predictor import Predictor

logger = logging.getLogger(__name__)

# Datasets the demo model trains on (Task02, the pancreas, is held out for adaptation).
TRAINED = ("Task01_PhantomAbdomenCT", "Task03_PhantomAbdomenMRI", "Task04_PhantomBrainMRI",
           "Task05_PhantomLiverTumourCT", "Task06_PhantomHeadNeckPET")  # fmt: skip
HELD_OUT = "Task02_PhantomPancreasCT"
HELD_OUT_TARGET = "pancreas"  # the adaptation's new target (the set's aorta is left out)
WRONG_T1 = "A MRI scan of the head"


def demo_config_path() -> Path:
    return Path(str(resources.files("duplus") / "resources" / "configs" / "demo.yaml"))


def make_data(root: Path, s: DemoSettings, progress: bool) -> dict[str, Path]:
    from duplus.data.phantoms import make_phantoms

    return make_phantoms(
        root,
        cases=s.cases,
        seed=s.seed,
        test_seed=s.test_seed,
        shape=(s.shape,) * 3,
        test_cases=s.test_cases,
        dataset_cases={HELD_OUT: (s.adapt_cases, s.adapt_test_cases)},
        cohort_cases=s.cohort,
        cohort_shape=(s.cohort_shape,) * 3,
        progress=progress,
        workers=s.threads,
        overwrite=True,  # the demo folder is the demo's own
    )


def build_demo_config(phantoms: dict[str, Path], run_dir: Path, s: DemoSettings) -> TrainConfig:
    """``configs/demo.yaml`` pointed at this run's phantoms, sized by the settings."""
    raw = load_yaml(demo_config_path())
    by_name = {Path(d["spec"]).parent.name: d for d in raw["datasets"]}
    for name, entry in by_name.items():  # absolute: the run's saved config must work from any folder
        entry["spec"] = str((phantoms[name] / "dataset.json").absolute())
    raw.update(
        iterations=s.iterations,
        steps_per_epoch=s.steps_per_epoch,
        patch_size=list(s.patch_size),
        val_every=s.val_every,
        seed=s.seed,
        threads=s.threads,
        cache_dir=str((run_dir.parent / "cache").absolute()),
    )
    return from_dict(TrainConfig, raw, where=str(demo_config_path()))


def train_model(
    phantoms: dict[str, Path], run_dir: Path, s: DemoSettings, progress: bool
) -> tuple[Path, dict]:
    """Train (or finish training, when ``run_dir`` holds an interrupted run) the demo model."""
    from duplus.training.trainer import BEST, LAST, Trainer

    cfg = build_demo_config(phantoms, run_dir, s)
    trainer = Trainer(cfg, run_dir, resume=(run_dir / LAST).exists(), progress=progress)
    metrics = trainer.fit()
    ckpt = run_dir / BEST if (run_dir / BEST).exists() else run_dir / LAST
    return ckpt, {k: float(v) for k, v in metrics.items()} | {
        "encoder_calls_after_warmup": _encoder_calls(trainer)
    }


def _encoder_calls(trainer: Any) -> int:
    """Text-encoder forward passes during the training loop, after the prompt-cache warm-up."""
    if not hasattr(trainer, "text_encoder"):
        return 0
    return int(trainer.text_encoder.forward_count - trainer.encoder_calls_after_warmup)


def load_predictor(ckpt: Path) -> Predictor:
    return Predictor.from_checkpoint(ckpt, device="cpu")


def _spec(phantoms: dict[str, Path], name: str) -> DatasetSpec:
    return load_dataset_spec(phantoms[name] / "dataset.json")


def segment_test_sets(
    predictor: Predictor, phantoms: dict[str, Path], figures: Path, s: DemoSettings
) -> list[dict]:
    rows: list[dict] = []
    for name in TRAINED:
        spec = _spec(phantoms, name)
        rows += evaluate_test_set(
            predictor, spec, limit=s.eval_limit, overlap=s.overlap, figure=figures / f"overlay_{name}.png"
        )
    return rows


def t1_experiment(predictor: Predictor, phantoms: dict[str, Path], s: DemoSettings) -> list[dict]:
    rows = []
    for name in ("Task01_PhantomAbdomenCT", "Task03_PhantomAbdomenMRI"):
        spec = _spec(phantoms, name)
        wrong = WRONG_T1 if spec.modality == "CT" else "A CT scan of the head and neck"
        rows += [
            {"dataset": spec.name, **r}
            for r in t1_mismatch(predictor, spec, wrong, limit=s.eval_limit, overlap=s.overlap)
        ]
    return rows


def organ_experiment(predictor: Predictor, phantoms: dict[str, Path], s: DemoSettings) -> list[dict]:
    spec = _spec(phantoms, "Task01_PhantomAbdomenCT")
    return organ_control(predictor, spec, "liver", "spleen", limit=s.eval_limit, overlap=s.overlap)


def paraphrase_experiment(predictor: Predictor, phantoms: dict[str, Path], s: DemoSettings) -> list[dict]:
    spec = _spec(phantoms, "Task01_PhantomAbdomenCT")
    return paraphrase_robustness(
        predictor, spec, paraphrases=s.paraphrases, limit=s.eval_limit, overlap=s.overlap
    )


def wording_experiment(predictor: Predictor, phantoms: dict[str, Path], s: DemoSettings) -> dict:
    """Held-out T2 and T1 wordings on the test cases (:mod:`duplus.demo.wording_experiment`)."""
    from duplus.demo.wording_experiment import unseen_wording_experiment

    names = ("Task01_PhantomAbdomenCT", "Task03_PhantomAbdomenMRI", "Task04_PhantomBrainMRI")
    specs = {name: _spec(phantoms, name) for name in names}
    return unseen_wording_experiment(predictor, specs, limit=s.eval_limit, overlap=s.overlap, quick=s.quick)


def adapt_experiment(
    ckpt: Path, phantoms: dict[str, Path], out: Path, figures: Path, s: DemoSettings, progress: bool
) -> dict:
    """Teach the trained model the held-out pancreas with a small adapter; measure forgetting."""
    from duplus.adapt.adapter_file import load_adapted_predictor
    from duplus.adapt.api import adapt_checkpoint
    from duplus.adapt.config import AdaptConfig

    config = {
        "datasets": [{"spec": str(phantoms[HELD_OUT] / "dataset.json"), "exclude_targets": ["aorta"]}],
        "train": list(s.adapt_train),
        "iterations": s.adapt_iterations,
        "steps_per_epoch": s.adapt_iterations,
        "lr": s.adapt_lr,
        "val_fraction": s.adapt_val_fraction,
        "val_max_cases": s.adapt_cases,  # every validation case
        "patch_size": list(s.patch_size),
        "seed": s.seed,
        "threads": s.threads,
        "cache_dir": str((out.parent / "cache").absolute()),  # the demo's own cache, shared with training
    }
    if out.exists():  # the demo's own output from an earlier run: adaptation starts afresh
        remove_output(out)
    report = dict(adapt_checkpoint(ckpt, from_dict(AdaptConfig, config), out, merge=False, progress=progress))
    md = Path(report.get("report_md", out / "adapt_report.md"))
    report["markdown"] = md.read_text().split("\n", 1)[-1] if md.is_file() else ""
    # the held-out test cases, in their own geometry, through the same path as `segment --adapter`
    adapted = load_adapted_predictor(ckpt, out / "adapter.pt", device="cpu")
    figure = figures / f"adapted_{HELD_OUT}.png"
    report["test"] = evaluate_test_set(
        adapted,
        _spec(phantoms, HELD_OUT),
        targets=[HELD_OUT_TARGET],
        limit=s.eval_limit,
        overlap=s.overlap,
        figure=figure,
    )
    report["test_figure"] = figure.name
    return report


def prognosis_experiment(
    ckpt: Path, phantoms: dict[str, Path], out: Path, figures: Path, s: DemoSettings, progress: bool
) -> dict:
    """Image / EHR / both C-indices on the synthetic HECKTOR-layout cohort, beside a CoxPH baseline."""
    from duplus.prognosis.api import run_cohort_cv

    return run_cohort_cv(
        hecktor=phantoms["HECKTOR_Phantom"],
        checkpoint=ckpt,
        out=out,
        km_figure=figures / "km_both.png",
        overrides={
            "epochs": s.prognosis_epochs,
            "folds": s.prognosis_folds,
            "repeats": s.prognosis_repeats,
            "seed": s.seed,
            # a CPU-sized adapter on the last transformer layer (the paper: r=32, alpha=128, all)
            "lora_r": 8,
            "lora_alpha": 16.0,
            "lora_targets": r"encoder\.layer\.5\..*",
        },
        progress=progress,
    )


def summarise(rows: list[dict], by: list[str], value: str = "dice") -> pd.DataFrame:
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    return df.groupby(by, sort=False)[value].agg(["mean", "std", "count"]).reset_index().fillna(0.0)


def mean_of(rows: list[dict], value: str = "dice") -> float:
    vals = [r[value] for r in rows if value in r and np.isfinite(r[value])]
    return float(np.mean(vals)) if vals else float("nan")

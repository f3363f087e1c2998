"""Ablations of the DuPLUS design on the phantom collection (issue #23). Not run in CI.

Every variant is the demo's training (``configs/demo.yaml``, 900 steps of 40^3 patches, the
``tiny`` preset) with one switch changed, trained with 3 seeds and scored on the untouched test
cases (drawn from :attr:`DemoSettings.test_seed`, which no setting was chosen on). The stress
test trains on the CT and MRI datasets only and segments abdominal PET phantoms, a modality it
never saw, with the right and with wrong T1 prompts.

    python experiments/ablations.py --work /path/to/scratch        # all runs (hours on 2 CPU cores)
    python experiments/ablations.py --work ... --only full gate    # some variants
    python experiments/ablations_doc.py                            # results -> docs/ABLATIONS.md

Runs are done one at a time; a finished run (its ``ablation_result.json``) is skipped and an
interrupted one resumes from its last checkpoint, so the script can be restarted at any time.
The summary is ``experiments/results/ablations.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "ablations.json"

if os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":  # idle OpenMP threads must sleep
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})

import torch  # noqa: E402

from duplus.data.phantoms.datasets import PhantomDataset  # noqa: E402
from duplus.demo.settings import DemoSettings  # noqa: E402
from duplus.reporting.provenance import code_commit  # noqa: E402

logger = logging.getLogger("ablations")

TRAINED = ("Task01_PhantomAbdomenCT", "Task03_PhantomAbdomenMRI", "Task04_PhantomBrainMRI",
           "Task05_PhantomLiverTumourCT", "Task06_PhantomHeadNeckPET")  # fmt: skip
CT_MRI = TRAINED[:4]
PET_ABDOMEN = PhantomDataset(
    "Task90_PhantomAbdomenPET", "abdomenpet", "abdomen", "PET", "abdomen",
    {1: "liver", 2: "spleen", 3: "left kidney", 4: "right kidney"},
    "Synthetic abdominal FDG-PET (stress test only): liver, spleen and kidneys.",
)  # fmt: skip
PET_TASK_INDEX = 90  # its cases' own stream of the test seed
WRONG_T1 = {"CT": "A MRI scan of the head", "MRI": "A CT scan of the head and neck"}  # as the demo's (a)
PET_T1S = {"right": "A PET scan of the abdomen", "wrong (CT)": "A CT scan of the abdomen",
           "wrong (MRI)": "A MRI scan of the abdomen"}  # fmt: skip

# variant -> (description, model overrides, trained datasets)
VARIANTS: dict[str, tuple[str, dict[str, Any], tuple[str, ...]]] = {
    "full": ("the demo model: dual prompt, FiLM, modality stems, head_position", {}, TRAINED),
    "single_prompt": ("one prompt ('A CT scan of the abdomen: liver') drives FiLM and head",
                      {"single_prompt": True}, TRAINED),
    "gate": ("the authors' sigmoid channel gate instead of FiLM", {"conditioning": "gate"}, TRAINED),
    "no_t1": ("no T1 conditioning", {"conditioning": "none"}, TRAINED),
    "single_stem": ("one shared input stem for every modality", {"single_stem": True}, TRAINED),
    "no_position": ("the head does not read voxel positions", {"head_position": False}, TRAINED),
    "ctmri": ("stress test: trained on CT and MRI only (modality stems)", {}, CT_MRI),
    "ctmri_single_stem": ("stress test: trained on CT and MRI only, one shared stem",
                          {"single_stem": True}, CT_MRI),
}  # fmt: skip


def make_data(work: Path, test_cases: int, s: DemoSettings) -> dict[str, Path]:
    """The demo's phantom collection (training seed 0, the demo's test seed) with ``test_cases``
    held-out cases per trained dataset, plus abdominal PET test cases for the stress test."""
    from duplus.data.phantoms import make_phantoms
    from duplus.data.phantoms.datasets import dataset_meta, write_dataset_case
    from duplus.fileio import write_json_atomic

    root = work / "phantoms"
    if (root / "phantoms.json").is_file():
        paths = {name: root / name for name in TRAINED}
    else:
        paths = make_phantoms(
            root, cases=s.cases, seed=s.seed, test_seed=s.test_seed, shape=s.shape, test_cases=test_cases,
            dataset_cases={"Task02_PhantomPancreasCT": (1, 0)}, progress=False, workers=s.threads,
        )  # fmt: skip
    pet = root / PET_ABDOMEN.task
    if not (pet / "dataset.json").is_file():
        for j in range(test_cases):  # no training cases: every case is a test case of the test seed
            write_dataset_case(pet, PET_ABDOMEN, PET_TASK_INDEX, s.seed, s.test_seed, j, 0, (s.shape,) * 3)
        write_json_atomic(pet / "dataset.json", dataset_meta(PET_ABDOMEN, s.seed, s.test_seed, 0, test_cases))
    return {**paths, PET_ABDOMEN.task: pet}


def build_config(variant: str, seed: int, phantoms: dict[str, Path], run_dir: Path, s: DemoSettings) -> Any:
    """The demo config with the variant's switch, seed and datasets."""
    from duplus.demo.steps import build_demo_config

    _, model, datasets = VARIANTS[variant]
    settings = DemoSettings(**{**s.to_dict(), "seed": seed})
    cfg = build_demo_config({n: phantoms[n] for n in TRAINED}, run_dir, settings)
    cfg.datasets = [d for d in cfg.datasets if Path(d.spec).parent.name in datasets]
    for key, value in model.items():
        setattr(cfg.model, key, value)
    return cfg


def train(cfg: Any, run_dir: Path) -> tuple[Path, dict[str, Any]]:
    from duplus.training.trainer import BEST, LAST, Trainer

    trainer = Trainer(cfg, run_dir, resume=(run_dir / LAST).exists(), progress=False)
    metrics = trainer.fit()
    ckpt = run_dir / BEST if (run_dir / BEST).exists() else run_dir / LAST
    return ckpt, {k: float(v) for k, v in metrics.items()} | {"best_metric": float(trainer.best_metric)}


def score_with_t1(predictor: Any, spec: Any, t1_texts: dict[str, str], overlap: float) -> list[dict]:
    """Dice of every test case and target with each T1 text in ``t1_texts`` (label -> text)."""
    from duplus.data.io import load_channels
    from duplus.demo.experiments import reference_masks
    from duplus.metrics.segmentation import compute_case_metrics

    rows = []
    for case in spec.test:
        vol = load_channels(case.images)
        ref, targets = reference_masks(spec, case.images[0])
        for label, text in t1_texts.items():
            pred = predictor.predict(
                vol, spec.modality, spec.region, targets, overlap=overlap, t1_override=text
            )
            for k, t in enumerate(targets):
                m = compute_case_metrics(pred.masks[k], ref[k], tuple(vol.spacing))
                rows.append({"dataset": spec.name, "case": case.case_id, "target": t, "t1": label, **m})
    return rows


def evaluate(ckpt: Path, variant: str, phantoms: dict[str, Path], overlap: float) -> dict[str, list[dict]]:
    """Test Dice of a run: its datasets' test cases; T1 mismatch; the PET stress cases."""
    from duplus.data.specs import load_dataset_spec
    from duplus.demo.experiments import evaluate_test_set
    from duplus.inference.predictor import Predictor

    predictor = Predictor.from_checkpoint(ckpt, device="cpu")
    datasets = VARIANTS[variant][2]
    specs = {n: load_dataset_spec(phantoms[n] / "dataset.json") for n in (*TRAINED, PET_ABDOMEN.task)}
    out: dict[str, list[dict]] = {"test": [], "wrong_t1": [], "pet_stress": []}
    for name in datasets:
        out["test"] += evaluate_test_set(predictor, specs[name], overlap=overlap)
    for name in ("Task01_PhantomAbdomenCT", "Task03_PhantomAbdomenMRI"):
        spec = specs[name]
        out["wrong_t1"] += score_with_t1(predictor, spec, {"wrong": WRONG_T1[spec.modality]}, overlap)
    if variant in ("full", "ctmri", "ctmri_single_stem"):
        out["pet_stress"] = score_with_t1(predictor, specs[PET_ABDOMEN.task], PET_T1S, overlap)
    return out


def run_one(work: Path, variant: str, seed: int, phantoms: dict[str, Path], s: DemoSettings) -> Path:
    """Train and score one variant with one seed (skipped when done); return its result file."""
    from duplus.fileio import write_json_atomic

    run_dir = work / "runs" / f"{variant}_s{seed}"
    result = run_dir / "ablation_result.json"
    if result.is_file():
        logger.info("%s seed %d: done before, skipped", variant, seed)
        return result
    t0 = time.perf_counter()
    cfg = build_config(variant, seed, phantoms, run_dir, s)
    ckpt, validation = train(cfg, run_dir)
    t_train = time.perf_counter() - t0
    scores = evaluate(ckpt, variant, phantoms, overlap=cfg.sw_overlap)
    record = {
        "variant": variant,
        "seed": seed,
        "iterations": s.iterations,
        "code_commit": code_commit(HERE),
        "validation": validation,
        "seconds": {"train": t_train, "evaluate": time.perf_counter() - t0 - t_train},
        "load_average": [round(v, 2) for v in os.getloadavg()],
        **scores,
    }
    write_json_atomic(result, record)
    logger.info("%s seed %d: %.0f s train, %.0f s evaluate", variant, seed, *record["seconds"].values())
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", type=Path, required=True, help="folder for phantoms, runs and caches")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--only", nargs="+", choices=list(VARIANTS), help="variants to run (default: all)")
    p.add_argument("--iterations", type=int, default=DemoSettings.full().iterations)
    p.add_argument("--test-cases", type=int, default=8, help="untouched test cases per dataset")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--smoke", action="store_true", help="the demo's --quick sizes: checks the script runs")
    p.add_argument("--summarise", action="store_true", help="only summarise the runs already finished")
    p.add_argument("--out", type=Path, default=RESULTS, help="summary JSON")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    from ablations_stats import summarise  # noqa: PLC0415  (beside this script)

    t0 = time.perf_counter()
    settings = (DemoSettings.smoke() if args.smoke else DemoSettings.full()).with_iterations(args.iterations)
    if not args.summarise:
        phantoms = make_data(args.work, args.test_cases, settings)
        variants = args.only or list(VARIANTS)
        for seed in args.seeds:
            for v in variants:
                run_one(args.work, v, seed, phantoms, settings)
    records = [json.loads(r.read_text()) for r in sorted((args.work / "runs").glob("*/ablation_result.json"))]
    summary = summarise(
        records, {k: v[0] for k, v in VARIANTS.items()}, test_seed=DemoSettings.full().test_seed
    )
    summary["code_commits"] = sorted({str(r.get("code_commit", "not recorded")) for r in records})
    summary["wall_seconds_this_call"] = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    logger.info("%d runs summarised into %s", len(records), args.out)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    raise SystemExit(main())

"""``duplus demo``: the embedded default, end to end on the synthetic phantom collection.

1. make the phantom collection (CT, MRI, PET datasets with partial labels + a HECKTOR-layout cohort);
2. train the tiny model on several datasets (the pancreas dataset is held out);
3. segment the held-out cases by prompt, in their own geometry, and evaluate them;
4. run the experiments: (a) T1 mismatch, (b) organ control by T2, (c) adaptation to the held-out
   pancreas and prognosis (image / EHR / both), (d) paraphrase robustness, (e) unseen wordings;
   and, when a brain-tissue model is installed or packaged, Dice on the real MNI152 T1;
5. write ``report.md`` with tables and figures.

Every number in the report is computed by this run, and marked as validation (used for choosing)
or test (untouched): the test cases and the cohort come from :attr:`DemoSettings.test_seed`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from duplus.demo.settings import DemoSettings
from duplus.fileio import OutputFolder, write_json_atomic

logger = logging.getLogger(__name__)

__all__ = ["DemoSettings", "run_demo"]


@dataclass
class _Timer:
    seconds: dict[str, float]

    def run(self, name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        logger.info("demo: %s ...", name)
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        self.seconds[name] = time.perf_counter() - t0
        logger.info("demo: %s done in %.1f s", name, self.seconds[name])
        return out


def run_demo(
    out: Path, *, quick: bool = False, seed: int = 0, progress: bool = True, iterations: int | None = None
) -> Path:
    """Run the whole demo into ``out``; return the path of ``report.md``.

    ``iterations`` replaces the run's training steps (900 for the full run, whose validation organ
    Dice ends at 0.86-0.87; on the earlier 8-case data, 1350-1800 steps took it from 0.827 to 0.85).
    """
    settings = DemoSettings.smoke() if quick else DemoSettings.full()
    if iterations is not None:
        settings = settings.with_iterations(iterations)
    settings.seed = seed
    torch.set_num_threads(settings.threads)
    with OutputFolder(out, replace_owned=True, name="demo folder"):  # a rerun redoes its own outputs
        return _run_steps(Path(out), settings, progress)


def _run_steps(out: Path, settings: DemoSettings, progress: bool) -> Path:
    from duplus.demo import steps
    from duplus.demo.brain import brain_experiment
    from duplus.reporting.demo_report import write_report

    timer = _Timer({})
    results: dict[str, Any] = {"settings": settings.to_dict()}

    phantoms = timer.run("phantoms", steps.make_data, out / "phantoms", settings, progress)
    ckpt, train_metrics = timer.run(
        "training", steps.train_model, phantoms, out / "train", settings, progress
    )
    results["training"] = train_metrics
    predictor = steps.load_predictor(ckpt)
    results["segmentation"] = timer.run(
        "segmentation", steps.segment_test_sets, predictor, phantoms, out / "figures", settings
    )
    results["brain_model"] = timer.run("brain model", brain_experiment, out / "figures")
    results["t1_mismatch"] = timer.run("T1 mismatch", steps.t1_experiment, predictor, phantoms, settings)
    results["organ_control"] = timer.run(
        "organ control", steps.organ_experiment, predictor, phantoms, settings
    )
    results["paraphrases"] = timer.run(
        "paraphrases", steps.paraphrase_experiment, predictor, phantoms, settings
    )
    results["unseen_wordings"] = timer.run(
        "unseen wordings", steps.wording_experiment, predictor, phantoms, settings
    )
    results["adaptation"] = timer.run(
        "adaptation",
        steps.adapt_experiment,
        ckpt,
        phantoms,
        out / "adapt",
        out / "figures",
        settings,
        progress,
    )
    results["prognosis"] = timer.run(
        "prognosis",
        steps.prognosis_experiment,
        ckpt,
        phantoms,
        out / "prognosis",
        out / "figures",
        settings,
        progress,
    )
    results["seconds"] = timer.seconds
    write_json_atomic(out / "results.json", results)
    report = write_report(out, results)
    total = sum(timer.seconds.values())
    logger.info("demo finished in %.0f s", total)
    return report

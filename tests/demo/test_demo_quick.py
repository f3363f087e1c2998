"""`duplus demo --quick`: the whole pipeline end to end, with every report section filled from the run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from duplus.cli import main

pytestmark = pytest.mark.slow


def test_quick_demo_writes_a_complete_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "-q"]) == 0
    assert str(out / "report.md") in capsys.readouterr().out
    report = (out / "report.md").read_text()
    results = json.loads((out / "results.json").read_text())
    for heading in (
        "## Segmentation of held-out cases by prompt",
        "## Brain model on a real MRI (the MNI152 T1)",
        "## (a) T1 mismatch",
        "## (b) Organ control",
        "## (c1) Adaptation",
        "## (c2) Prognosis",
        "## (d) Prompt-paraphrase robustness",
        "## (e) Unseen wordings — test (untouched)",
    ):
        assert heading in report
    for tagged in ("held-out cases by prompt — test (untouched)", "## (a) T1 mismatch: the right modality prompt"
                   " against a wrong one — test (untouched)", "New target on the held-out test cases — test (untouched)"):  # fmt: skip
        assert tagged in report
    assert "**validation (used for choosing)**" in report
    assert "Test wordings naming a trained target within 2 Dice points" in report
    # the embedded adaptation report nests under (c1): no second top-level section, no title
    assert "### New task" in report and "\n## New task" not in report
    assert "# DuPLUS adaptation report" not in report
    assert "_not run_" not in report and "_no rows_" not in report
    # the adapted model segments the held-out set's test cases through `segment --adapter`'s path
    test_rows = results["adaptation"]["test"]
    assert test_rows and {r["target"] for r in test_rows} == {"pancreas"}
    # the adaptation's pancreas set has its own size; the trained sets keep theirs
    s = results["settings"]
    index = json.loads((out / "phantoms" / "phantoms.json").read_text())
    sizes = {d["name"]: (d["numTraining"], d["numTest"]) for d in index["datasets"]}
    pancreas_size, other_size = (s["adapt_cases"], s["adapt_test_cases"]), (s["cases"], s["test_cases"])
    assert sizes.pop("Task02_PhantomPancreasCT") == pancreas_size != other_size
    assert set(sizes.values()) == {other_size}
    assert len(test_rows) == s["adapt_test_cases"]
    assert f"({s['adapt_cases']} and {s['adapt_test_cases']} in the pancreas set" in report
    mean_test = sum(r["dice"] for r in test_rows) / len(test_rows)
    assert f"Mean Dice over {len(test_rows)} case(s): **{mean_test:.3f}**" in report
    assert "](figures/adapted_Task02_PhantomPancreasCT.png)" in report
    for png in (
        "dice_bars.png",
        "km_both.png",
        "adapted_Task02_PhantomPancreasCT.png",
        "overlay_Task01_PhantomAbdomenCT.png",
        "overlay_Task06_PhantomHeadNeckPET.png",
    ):
        assert (out / "figures" / png).stat().st_size > 1000
    # the headline number in the report is the one computed from this run's rows
    dices = [r["dice"] for r in results["segmentation"]]
    table = {}
    for r in results["segmentation"]:
        table.setdefault((r["dataset"], r["target"]), []).append(r["dice"])
    mean = sum(sum(v) / len(v) for v in table.values()) / len(table)
    assert f"Mean Dice over targets: **{mean:.3f}**" in report
    assert len(dices) >= 15
    # prognosis: text only vs text + structure, image features in the given and in the predicted masks
    for row in ("ehr-text", "ehr", "both (given masks)", "both (predicted masks)"):
        assert re.search(rf"\| {re.escape(row)} \| 0\.\d+ ± 0\.\d+ \|", report), row
    assert results["training"]["encoder_calls_after_warmup"] == 0
    assert sum(results["seconds"].values()) < 600
    _assert_test_cases_untouched(out, results)


def _assert_test_cases_untouched(out, results):
    """Every case the report scores as a test case comes from the untouched test seed's stream, and
    none is a case the base training or the adaptation trained or validated on."""
    from duplus.data.phantoms.case import TEST_STREAM, case_seed
    from duplus.demo.settings import DemoSettings

    s = results["settings"]
    assert s["test_seed"] == DemoSettings.full().test_seed != s["seed"]
    index = json.loads((out / "phantoms" / "phantoms.json").read_text())
    assert (index["seed"], index["test_seed"]) == (s["seed"], s["test_seed"])
    scored = {(r["dataset"], r["case"]) for r in results["segmentation"] + results["adaptation"]["test"]}
    assert scored and any(d == "PhantomPancreasCT" for d, _ in scored)
    for t, entry in enumerate(index["datasets"], start=1):
        name = entry["name"].split("_", 1)[1]
        cases = entry["cases"]
        meta = json.loads((out / "phantoms" / entry["path"] / "dataset.json").read_text())
        trained_on = {Path(item["image"]).name for item in meta["training"]}  # training + validation cases
        test = {f for f, c in cases.items() if c["split"] == "test"}
        assert trained_on == {f for f, c in cases.items() if c["split"] == "train"} and not trained_on & test
        assert not {cases[f]["seed"] for f in trained_on} & {cases[f]["seed"] for f in test}
        for j, f in enumerate(sorted(test)):
            assert cases[f]["seed"] == case_seed(s["test_seed"], TEST_STREAM, t, j)
        for d, case in scored:
            if d == name:
                assert f"{case}.nii.gz" in test, (d, case)


def test_demo_config_names_absolute_paths(tmp_path, monkeypatch):
    """A relative --out still gives the run a config that works from any folder (adapt reads it)."""
    from pathlib import Path

    from duplus.demo.settings import DemoSettings
    from duplus.demo.steps import TRAINED, build_demo_config

    monkeypatch.chdir(tmp_path)
    phantoms = {name: Path("runs/demo/phantoms") / name for name in TRAINED}
    cfg = build_demo_config(phantoms, Path("runs/demo/train"), DemoSettings.smoke())
    assert [Path(d.spec) for d in cfg.datasets] == [
        tmp_path / "runs/demo/phantoms" / name / "dataset.json" for name in TRAINED
    ]
    assert cfg.cache_dir == str(tmp_path / "runs/demo/cache")


def test_demo_iterations_override():
    """`duplus demo --iterations N` trains N steps and validates as often relative to them."""
    from duplus.cli import build_parser
    from duplus.demo.settings import DemoSettings
    from duplus.errors import ConfigError

    assert build_parser().parse_args(["demo", "--iterations", "1800"]).iterations == 1800
    assert build_parser().parse_args(["demo"]).iterations is None
    full = DemoSettings.full()
    longer = full.with_iterations(2 * full.iterations)
    assert (longer.iterations, longer.steps_per_epoch) == (2 * full.iterations, 2 * full.steps_per_epoch)
    assert longer.adapt_iterations == full.adapt_iterations and full.iterations == 900  # the rest is kept
    assert DemoSettings.smoke().with_iterations(3).steps_per_epoch == 3
    with pytest.raises(ConfigError, match="iterations >= 1"):
        full.with_iterations(0)


def test_evaluate_test_set_keeps_only_the_asked_targets(tmp_path):
    """`targets=` scores only those targets; one the dataset does not label is a one-line error."""
    from duplus.data.phantoms import make_phantoms
    from duplus.data.specs import load_dataset_spec
    from duplus.demo.experiments import evaluate_test_set
    from duplus.errors import ConfigError

    root = make_phantoms(tmp_path / "ph", cases=1, test_cases=1, shape=24, progress=False)
    spec = load_dataset_spec(root["Task02_PhantomPancreasCT"] / "dataset.json")
    with pytest.raises(
        ConfigError, match=r"no reference labels for \['liver'\]; it labels \['pancreas', 'aorta'\]"
    ):
        evaluate_test_set(None, spec, targets=["pancreas", "liver"])  # type: ignore[arg-type]

    class Recorder:  # stands in for a Predictor: records what it is asked, predicts the reference
        asked: list[str] = []

        def predict(self, vol, modality, region, targets, overlap):
            from types import SimpleNamespace

            from duplus.demo.experiments import reference_masks

            Recorder.asked = list(targets)
            ref, names = reference_masks(spec, spec.test[0].images[0])
            return SimpleNamespace(masks=ref[[names.index(t) for t in targets]], prompts={"t1": "x"})

    rows = evaluate_test_set(Recorder(), spec, targets=["pancreas"])  # type: ignore[arg-type]
    assert Recorder.asked == ["pancreas"]
    assert [r["target"] for r in rows] == ["pancreas"] and rows[0]["dice"] == pytest.approx(1.0)

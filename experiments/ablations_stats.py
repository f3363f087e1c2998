"""Summaries of the ablation runs: mean +- sd over seeds, and paired comparisons with the full model.

The unit of the paired comparison is the test case: a variant and the full model trained with the
same seed segment the same untouched cases; each case's difference (mean over its organ, or
lesion, targets) is averaged over the seeds both have, then a bootstrap 95 % CI of the mean
difference over cases and a two-sided Wilcoxon signed-rank p are computed.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from duplus.data.label_space import is_lesion

BOOTSTRAP = 10_000
KINDS = ("organs", "lesions")


def _kind(target: str) -> str:
    return "lesions" if is_lesion(target) else "organs"


def headline(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The demo's summary of test rows: per (dataset, target) mean over cases, then the mean over
    organ targets, over lesion targets and over all."""
    per: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in rows:
        per[(r["dataset"], r["target"])].append(float(r["dice"]))
    means = {k: float(np.mean(v)) for k, v in per.items()}
    out = {"all": float(np.mean(list(means.values()))) if means else float("nan")}
    for kind in KINDS:
        vals = [v for (_, t), v in means.items() if _kind(t) == kind]
        out[kind] = float(np.mean(vals)) if vals else float("nan")
    return out


def case_scores(rows: list[dict[str, Any]], kind: str) -> dict[tuple[str, str], float]:
    """``{(dataset, case): mean Dice over the case's targets of kind}``."""
    per: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in rows:
        if _kind(r["target"]) == kind:
            per[(r["dataset"], r["case"])].append(float(r["dice"]))
    return {k: float(np.mean(v)) for k, v in per.items()}


def paired(
    variant_runs: dict[int, list[dict]], full_runs: dict[int, list[dict]], kind: str
) -> dict[str, Any] | None:
    """Variant minus full, per case averaged over shared seeds: mean, bootstrap CI, Wilcoxon p."""
    from scipy.stats import wilcoxon

    seeds = sorted(set(variant_runs) & set(full_runs))
    if not seeds:
        return None
    diffs: dict[tuple[str, str], list[float]] = defaultdict(list)
    for s in seeds:
        a, b = case_scores(variant_runs[s], kind), case_scores(full_runs[s], kind)
        for case in sorted(set(a) & set(b)):
            diffs[case].append(a[case] - b[case])
    d = np.array([np.mean(v) for v in diffs.values()])
    if d.size < 2:
        return None
    rng = np.random.default_rng(0)
    boot = d[rng.integers(0, d.size, size=(BOOTSTRAP, d.size))].mean(axis=1)
    p = float(wilcoxon(d).pvalue) if np.any(d != 0) else 1.0
    return {
        "mean_diff": float(d.mean()),
        "ci95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
        "wilcoxon_p": p,
        "cases": int(d.size),
        "seeds": seeds,
    }


def _mean_sd(values: list[float]) -> dict[str, Any]:
    v = np.array(values, dtype=float)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0, "n": int(v.size),
            "values": [float(x) for x in v]}  # fmt: skip


def _t1_drop(record: dict[str, Any]) -> dict[str, float]:
    """Mean Dice on the abdominal CT and MRI test cases with the right T1 and with a wrong one."""
    datasets = {r["dataset"] for r in record["wrong_t1"]}
    right = [r["dice"] for r in record["test"] if r["dataset"] in datasets]
    wrong = [r["dice"] for r in record["wrong_t1"]]
    return {"right": float(np.mean(right)), "wrong": float(np.mean(wrong))}


def _stress(records: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for variant in sorted({r["variant"] for r in records if r.get("pet_stress")}):
        runs = [r for r in records if r["variant"] == variant and r.get("pet_stress")]
        by_t1: dict[str, list[float]] = defaultdict(list)
        for run in runs:
            per: dict[str, list[float]] = defaultdict(list)
            for row in run["pet_stress"]:
                per[row["t1"]].append(float(row["dice"]))
            for label, v in per.items():
                by_t1[label].append(float(np.mean(v)))
        ct = [
            headline([x for x in run["test"] if x["dataset"] == "PhantomAbdomenCT"])["organs"] for run in runs
        ]
        out[variant] = {"pet": {k: _mean_sd(v) for k, v in by_t1.items()}, "abdomen_ct_organs": _mean_sd(ct)}
    return out


def summarise(
    records: list[dict[str, Any]], descriptions: dict[str, str], *, test_seed: int
) -> dict[str, Any]:
    """The results JSON of the ablations from the per-run records."""
    by_variant: dict[str, dict[int, dict]] = defaultdict(dict)
    for r in records:
        by_variant[r["variant"]][int(r["seed"])] = r
    full = by_variant.get("full", {})
    variants: dict[str, Any] = {}
    for name, runs in by_variant.items():
        seeds = sorted(runs)
        heads = [headline(runs[s]["test"]) for s in seeds]
        entry: dict[str, Any] = {
            "description": descriptions.get(name, ""),
            "seeds": seeds,
            "iterations": sorted({runs[s]["iterations"] for s in seeds}),
            "test": {k: _mean_sd([h[k] for h in heads]) for k in ("all", *KINDS)},
            "validation_organs": _mean_sd([runs[s]["validation"].get("dice/organs", np.nan) for s in seeds]),
            "t1": {k: _mean_sd([_t1_drop(runs[s])[k] for s in seeds]) for k in ("right", "wrong")},
            "train_seconds": _mean_sd([runs[s]["seconds"]["train"] for s in seeds]),
        }
        same_data = {r["dataset"] for s in seeds for r in runs[s]["test"]} == {
            r["dataset"] for s in full for r in full[s]["test"]
        }
        if name != "full" and full and same_data:
            entry["vs_full"] = {
                kind: paired({s: runs[s]["test"] for s in seeds}, {s: full[s]["test"] for s in full}, kind)
                for kind in KINDS
            }
        variants[name] = entry
    return {
        "what": "DuPLUS ablations on the phantom collection (experiments/ablations.py)",
        "test_seed": test_seed,
        "test_cases": sorted({(r["dataset"], r["case"]) for rec in records for r in rec["test"]}).__len__(),
        "variants": variants,
        "stress": _stress(records),
        "runs": [
            {
                "variant": r["variant"],
                "seed": r["seed"],
                "seconds": r["seconds"],
                "load_average": r["load_average"],
            }
            for r in records
        ],
    }

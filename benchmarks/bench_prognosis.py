"""Prognosis on real clinical survival tables: DuPLUS ``ehr`` / ``ehr-text`` beside Cox and RSF peers.

Tables (development set of issue #22): scikit-survival's WHAS500, Veterans lung cancer and AIDS,
lifelines' Rossi recidivism; and ``phantom``, the clinical table of the synthetic HECKTOR-layout
cohort (400 patients of development seed 7, with a free-text ``Notes`` column). Each is cross-validated 5-fold x 3 repeats with the folds of
:func:`duplus.prognosis.splits.stratified_kfold` (seed 0, 1, 2), the same folds for every method:

* ``ehr``: DuPLUS text + structure (linear Cox head; penalty and text block chosen by inner CV);
* ``ehr-no-notes``: ``ehr`` without the notes column (phantom only: what the notes add);
* ``ehr-structure``: the same head with the text block left out (what the text adds);
* ``ehr-text``: DuPLUS text only (frozen encoder + neural Cox head, the ``cpu`` preset);
* ``coxph``: lifelines ``CoxPHFitter`` unpenalised, on the same clinical design;
* ``coxph-pen``: lifelines ``CoxPHFitter`` with an L2 penalizer chosen by 5-fold inner CV
  (Harrell's C) on the training fold;
* ``rsf``: scikit-survival ``RandomSurvivalForest`` (200 trees, min 15 samples per leaf).

Every figure is on the outer test folds; nothing is chosen on them. IBS for the Cox-type models
uses a Breslow baseline of the training fold; the forest uses its own survival function.

    nice python benchmarks/bench_prognosis.py                       # all tables -> results + doc
    python benchmarks/bench_prognosis.py --doc-only                 # regenerate docs/PROGNOSIS.md
    nice python benchmarks/bench_prognosis.py --tables phantom --merge   # add one table to the results
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import _env  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)
import numpy as np
import pandas as pd

from duplus.reporting.provenance import code_commit

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "prognosis.json"
DOC = ROOT / "docs" / "PROGNOSIS.md"
PHANTOM_SEED = 7  # a development seed: the demo's cohort (test seed 2025) is never used here
METHODS = ("ehr", "ehr-no-notes", "ehr-structure", "ehr-text", "coxph", "coxph-pen", "rsf")
PENALIZERS = (0.001, 0.01, 0.1, 1.0)


def load_table(name: str) -> pd.DataFrame:
    """``id, time, event`` + the clinical columns (categoricals as plain strings)."""
    if name == "phantom":
        from duplus.data.phantoms.cohort import cohort_rows

        rows = cohort_rows(PHANTOM_SEED, 400)
        x = pd.DataFrame([r for r, _ in rows]).drop(columns=["PatientID"])
        t = [truth["RFS"] for _, truth in rows]
        e = [truth["Relapse"] for _, truth in rows]
    elif name == "rossi":
        from lifelines.datasets import load_rossi

        raw = load_rossi()
        x, t, e = raw.drop(columns=["week", "arrest"]), raw["week"], raw["arrest"]
    else:
        from sksurv import datasets

        loader = {
            "whas500": datasets.load_whas500,
            "veterans": datasets.load_veterans_lung_cancer,
            "aids": datasets.load_aids,
        }[name]
        x, y = loader()
        e, t = y[y.dtype.names[0]], y[y.dtype.names[1]]
    x = x.astype({c: object for c in x.columns if str(x[c].dtype) == "category"})
    df = pd.DataFrame({"id": [f"{name}-{i}" for i in range(len(x))], "time": np.asarray(t, float)})
    df["event"] = np.asarray(e).astype(int)
    return pd.concat([df, x.reset_index(drop=True)], axis=1)


def _cox_risk(x_tr: pd.DataFrame, t: np.ndarray, e: np.ndarray, x_te: pd.DataFrame, pen: float) -> Any:
    from duplus.prognosis.cv import fit_cox_baseline

    return fit_cox_baseline(x_tr, t, e, x_te, penalizer=pen)


def _coxph_pen(x_tr: pd.DataFrame, t: np.ndarray, e: np.ndarray, x_te: pd.DataFrame, seed: int) -> Any:
    """Penalizer by 5-fold inner CV (mean Harrell's C) on the training fold."""
    from duplus.metrics.survival import concordance_index
    from duplus.prognosis.splits import stratified_kfold

    scores = []
    folds = stratified_kfold(e, 5, seed=seed)
    for pen in PENALIZERS:
        cs = []
        for val in folds:
            tr = np.setdiff1d(np.arange(len(t)), val)
            try:
                _, r = _cox_risk(x_tr.iloc[tr], t[tr], e[tr], x_tr.iloc[val], pen)
                cs.append(concordance_index(t[val], r, e[val]))
            except Exception:  # noqa: BLE001 - a non-converging inner fit scores nothing
                cs.append(np.nan)
        scores.append(np.nanmean(cs))
    pen = PENALIZERS[int(np.nanargmax(scores))]
    return _cox_risk(x_tr, t, e, x_te, pen)


def _rsf(
    x_tr: np.ndarray, t: np.ndarray, e: np.ndarray, x_te: np.ndarray, times: np.ndarray, seed: int
) -> Any:
    from sksurv.ensemble import RandomSurvivalForest
    from sksurv.util import Surv

    rsf = RandomSurvivalForest(n_estimators=200, min_samples_leaf=15, n_jobs=1, random_state=seed)
    rsf.fit(x_tr, Surv.from_arrays(e.astype(bool), t))
    fns = rsf.predict_survival_function(x_te)
    lo, hi = fns[0].domain
    surv = np.vstack([f(np.clip(times, lo, hi)) for f in fns])
    return rsf.predict(x_tr), rsf.predict(x_te), surv


def peer_folds(df: pd.DataFrame, folds: int, repeats: int) -> list[dict[str, Any]]:
    """Per-fold metrics of the lifelines and scikit-survival peers."""
    from duplus.prognosis.ehr import EHRTemplate
    from duplus.prognosis.evaluation import breslow_survival, eval_times, survival_metrics
    from duplus.prognosis.splits import stratified_kfold
    from duplus.prognosis.tabular import TabularEncoder

    t, e = df["time"].to_numpy(float), df["event"].to_numpy(int)
    times = eval_times(t, e)
    rows = []
    for rep in range(repeats):
        for k, te in enumerate(stratified_kfold(e, folds, seed=rep)):
            tr = np.setdiff1d(np.arange(len(df)), te)
            for method in ("coxph", "coxph-pen", "rsf"):
                start = time.perf_counter()
                enc = TabularEncoder(EHRTemplate()).fit(df.iloc[tr])
                if method == "rsf":
                    r_tr, r_te, surv = _rsf(
                        enc.transform(df.iloc[tr]), t[tr], e[tr], enc.transform(df.iloc[te]), times, rep
                    )
                else:
                    a, b = enc.raw_frame(df.iloc[tr]), enc.raw_frame(df.iloc[te])
                    fit = (
                        _cox_risk(a, t[tr], e[tr], b, 0.0)
                        if method == "coxph"
                        else _coxph_pen(a, t[tr], e[tr], b, rep)
                    )
                    r_tr, r_te = fit
                    surv = breslow_survival(r_tr, t[tr], e[tr], r_te, times)
                seconds = time.perf_counter() - start
                m = survival_metrics((t[tr], e[tr]), (t[te], e[te]), r_te, surv, times)
                rows.append({"repeat": rep, "fold": k, "mode": method, **m, "seconds": seconds})
    return rows


def duplus_folds(df: pd.DataFrame, folds: int, repeats: int) -> list[dict[str, Any]]:
    """Per-fold metrics of DuPLUS ``ehr``, ``ehr-structure`` (no text block) and ``ehr-text``."""
    from duplus.prognosis.config import PrognosisConfig, apply_preset
    from duplus.prognosis.cv import cross_validate
    from duplus.prognosis.ehr import EHRTemplate, records_to_texts

    texts = records_to_texts(df, EHRTemplate())
    cfg = apply_preset(
        PrognosisConfig(folds=folds, repeats=repeats, seed=0, ehr=EHRTemplate(), bootstrap=0), "cpu"
    )
    res = cross_validate(df, texts, None, cfg, modes=("ehr", "ehr-text"), baseline=False)
    structure = dataclass_replace(cfg, text_scales=[0.0])
    res2 = cross_validate(df, None, None, structure, modes=("ehr",), baseline=False)
    res2["mode"] = "ehr-structure"
    parts = [res, res2]
    if "Notes" in df.columns:  # what the free-text notes add
        plain = df.drop(columns=["Notes"])
        res3 = cross_validate(
            plain, records_to_texts(plain, EHRTemplate()), None, cfg, modes=("ehr",), baseline=False
        )
        res3["mode"] = "ehr-no-notes"  # type: ignore[index]
        parts.append(res3)
    return pd.concat(parts).to_dict(orient="records")  # type: ignore[union-attr]


def dataclass_replace(cfg: Any, **kw: Any) -> Any:
    import dataclasses

    return dataclasses.replace(cfg, **kw)


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    df = pd.DataFrame(rows)
    out = {}
    for mode, g in df.groupby("mode", sort=False):
        out[str(mode)] = {
            **{f"{m}_mean": float(g[m].mean()) for m in ("c_index", "uno_c", "ibs", "auc", "seconds")},
            **{f"{m}_sd": float(g[m].std(ddof=1)) for m in ("c_index", "uno_c", "ibs", "auc", "seconds")},
            "n_folds": int(g["c_index"].notna().sum()),
        }
    return out


def run(tables: list[str], folds: int, repeats: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    result: dict[str, Any] = {
        "folds": folds,
        "repeats": repeats,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, load {os.getloadavg()[0]:.1f}",
        "command": " ".join(["python", *sys.argv]),
        "source_commit": code_commit(ROOT),
        "tables": {},
    }
    for name in tables:
        df = load_table(name)
        print(f"{name}: {len(df)} patients, {int(df['event'].sum())} events", flush=True)
        rows = duplus_folds(df, folds, repeats) + peer_folds(df, folds, repeats)
        result["tables"][name] = {
            "n": len(df),
            "events": int(df["event"].sum()),
            "columns": len(df.columns) - 3,
            "summary": summarise(rows),
            "folds": rows,
        }
        for mode, s in result["tables"][name]["summary"].items():
            print(
                f"  {mode:14s} C {s['c_index_mean']:.3f} ± {s['c_index_sd']:.3f}  IBS {s['ibs_mean']:.3f}  {s['seconds_mean']:.1f} s/fold",
                flush=True,
            )
    return result


def write_doc(result: dict[str, Any], path: Path) -> None:
    """docs/PROGNOSIS.md from the results JSON."""
    lines = [
        "# Prognosis on clinical tables",
        "",
        "Generated by `benchmarks/bench_prognosis.py` from `benchmarks/results/prognosis.json`; do not edit by hand.",
        "",
        f"{result['folds']}-fold stratified cross-validation x {result['repeats']} repeats, the same folds for every",
        "method. All figures are on the outer **test** folds (mean ± sd over folds); every setting of",
        "every method was chosen inside the training fold (inner CV), none on the test folds.",
        f"Machine: {result['machine']} (shared with other jobs, so the seconds are upper bounds).",
        f"Command: `{result['command']}`; sources of commit {result.get('source_commit', 'unknown')}.",
        "",
        "Methods: `ehr` = DuPLUS text + structure (the record as text through the frozen text encoder,",
        "PCA to 8 components, beside the imputed/standardised/one-hot clinical columns; a ridge Cox",
        "head whose penalty and text-block weight (0, 0.5, 1) are chosen by 5-fold inner CV with the",
        "one-standard-error rule); `ehr-structure` = the same without the text block; `ehr-text` =",
        "DuPLUS text only (the paper's path with a frozen encoder, `--preset cpu`); `coxph` = lifelines",
        "CoxPHFitter unpenalised; `coxph-pen` = with an L2 penalizer chosen by inner CV; `rsf` =",
        "scikit-survival RandomSurvivalForest; `ehr-no-notes` = `ehr` without the free-text notes.",
        "IBS = integrated Brier score (lower is better). `phantom`: the clinical table of the synthetic",
        "HECKTOR-layout cohort (development seed 7, not the demo's test seed), whose hazard also has",
        "image terms (tumour volume, uptake) that no model here sees; its `Notes` restate smoking, HPV",
        "and performance status in free text, often where the structured cell is empty.",
        "",
        "| table | n (events) | method | Harrell's C | Uno's C | IBS | s/fold |",
        "|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for name, tab in result["tables"].items():
        for mode in METHODS:
            s = tab["summary"].get(mode)
            if s is None:
                continue
            lines.append(
                f"| {name} | {tab['n']} ({tab['events']}) | {mode} | {s['c_index_mean']:.3f} ± {s['c_index_sd']:.3f} | "
                f"{s['uno_c_mean']:.3f} ± {s['uno_c_sd']:.3f} | {s['ibs_mean']:.3f} ± {s['ibs_sd']:.3f} | {s['seconds_mean']:.1f} |"
            )
        ehr, cox = tab["summary"].get("ehr"), tab["summary"].get("coxph")
        if ehr and cox and name != "phantom":  # the bar is about the real tables
            gap = ehr["c_index_mean"] - cox["c_index_mean"]
            ok = "meets" if gap >= -0.005 else "**misses**"
            verdicts.append(
                f"- {name}: ehr − coxph = {gap:+.3f} C-index: {ok} the bar (≥ −0.005); {ehr['seconds_mean']:.1f} s/fold."
            )
    lines += [
        "",
        "## The bar (issue #22)",
        "",
        "`ehr` mean Harrell's C at or above lifelines CoxPH within 0.005 on every table:",
        "",
        *verdicts,
        "",
        *_speed_and_text(result),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def _speed_and_text(result: dict[str, Any]) -> list[str]:
    """Per-fold seconds of ``ehr`` (the first fold loads the text encoder and embeds every record
    once) and what the text block adds over the clinical columns alone."""
    lines = ["## Speed and what the text adds", ""]
    for name, tab in result["tables"].items():
        secs = [r["seconds"] for r in tab["folds"] if r["mode"] == "ehr"]
        s = tab["summary"]
        gain = s["ehr"]["c_index_mean"] - s["ehr-structure"]["c_index_mean"]
        lines.append(
            f"- {name} ({tab['n']} patients): `ehr` {np.mean(secs):.1f} s/fold on average, median "
            f"{np.median(secs):.1f}, at most {max(secs):.1f} s; the text block adds {gain:+.3f} C-index "
            "over the clinical columns alone"
            + (
                f"; the notes add {s['ehr']['c_index_mean'] - s['ehr-no-notes']['c_index_mean']:+.3f} "
                "(`ehr` vs `ehr-no-notes`)."
                if "ehr-no-notes" in s
                else "."
            )
        )
    lines += [
        "",
        "The first fold of each table also loads the text encoder and embeds every record once (later",
        "folds reuse the embeddings); the machine was shared, so single folds vary by 2-3x. `ehr` and",
        "`ehr-structure` are within 0.002 C-index on every table: on these tables the text written from",
        "the same columns adds nothing measurable (the inner CV chooses its weight, 0 included, with the",
        "one-standard-error rule toward the simpler model). `ehr-text` (the text alone, frozen encoder) is",
        "far below: a sentence encoder reads numbers poorly, which is why `ehr` enters them as numbers.",
        "",
        *_notes_sentence(result),
        "Usage: `duplus prognosis cv --clinical table.csv --id-col ID --time-col TIME --event-col EVENT",
        "--out run/` (events 0/1; modes `ehr` and `ehr-text` by default); `--preset paper` runs the",
        "paper's LoRA text path for `ehr-text` (hours on a CPU).",
    ]
    return lines


def _notes_sentence(result: dict[str, Any]) -> list[str]:
    """What the phantom cohort's free-text notes add, in words, from the figures."""
    tab = result["tables"].get("phantom")
    if not tab or "ehr-no-notes" not in tab["summary"]:
        return []
    s = tab["summary"]
    gain = s["ehr"]["c_index_mean"] - s["ehr-no-notes"]["c_index_mean"]
    verdict = "nothing measurable" if abs(gain) < 0.005 else f"{gain:+.3f} C-index"
    return [
        "Free-text notes (phantom): they restate smoking, HPV and performance status, often where the",
        f"structured cell is empty, yet they add {verdict} to `ehr` ({gain:+.3f}): read as part of the whole",
        "record by a frozen sentence encoder and reduced to a few principal components, their content is",
        "probably not separated from the rest of the record. Reading them better (their own embedding, a",
        "fine-tuned encoder) is open work.",
        "",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", nargs="+", default=["veterans", "rossi", "whas500", "aids"])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--doc", type=Path, default=DOC)
    ap.add_argument("--doc-only", action="store_true", help="regenerate the doc from --results")
    ap.add_argument("--merge", action="store_true", help="add the tables run to those in --results")
    args = ap.parse_args()
    if args.doc_only:
        result = json.loads(args.results.read_text())
    else:
        result = run(args.tables, args.folds, args.repeats)
        if args.merge and args.results.is_file():
            old = json.loads(args.results.read_text())
            old.setdefault("runs", []).append({k: v for k, v in result.items() if k != "tables"})
            old["tables"].update(result["tables"])
            result = old
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(result, indent=1, default=float) + "\n")
    write_doc(result, args.doc)
    print(f"wrote {args.doc}")


if __name__ == "__main__":
    main()

"""Write the README's generated tables ("The numbers") from a full demo run's results.

    python experiments/readme_numbers.py runs/demo/results.json

copies the results to ``experiments/results/demo_results.json`` and rewrites the README block
between the ``numbers:generated`` markers from it; every figure in that block is read from it.
Run with no argument to regenerate the block from the committed copy.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
COPY = ROOT / "experiments" / "results" / "demo_results.json"
README = ROOT / "README.md"
START, END = "<!-- numbers:generated:start -->", "<!-- numbers:generated:end -->"
LESION_WORDS = ("tumour", "tumor", "lesion", "lymph node")


def _is_lesion(target: str) -> bool:
    return any(w in target for w in LESION_WORDS)


def segmentation(rows: list[dict[str, Any]]) -> tuple[list[str], dict[str, float]]:
    per: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for r in rows:
        per[(r["dataset"], r["modality"], r["target"])].append(r["dice"])
    means = {k: float(np.mean(v)) for k, v in per.items()}
    by_ds: dict[tuple[str, str], list[str]] = defaultdict(list)
    for (ds, mod, t), d in means.items():
        by_ds[(ds, mod)].append(f"{t} {d:.3f}")
    lines = ["| dataset (modality) | targets and Dice |", "|---|---|"]
    lines += [f"| {ds.replace('Phantom', '')} ({mod}) | {', '.join(v)} |" for (ds, mod), v in by_ds.items()]
    organs = [d for (_, _, t), d in means.items() if not _is_lesion(t)]
    lesions = [d for (_, _, t), d in means.items() if _is_lesion(t)]
    summary = {"organs": float(np.mean(organs)), "n_organs": len(organs), "lesions": float(np.mean(lesions)),
               "mean": float(np.mean(list(means.values()))), "cases": len({(r["dataset"], r["case"]) for r in rows})}  # fmt: skip
    return lines, summary


def wordings(w: dict[str, Any]) -> dict[str, Any]:
    per: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in w["t2"]:
        if r.get("target") is not None:
            for k in ("canonical", "as_written", "mapped"):
                per[r["text"]][k].append(r[k])
    mean = {t: {k: float(np.mean(v)) for k, v in d.items()} for t, d in per.items()}
    within = {k: sum(m["canonical"] - m[k] <= 0.02 for m in mean.values()) for k in ("as_written", "mapped")}
    neg = [r for r in w["t2"] if r.get("target") is None]
    neg_texts = {r["text"] for r in neg}
    empty = {t for t in neg_texts if all(r["mapped_voxels"] == 0 for r in neg if r["text"] == t)}
    val_ok = sum(r["correct"] for r in w["validation"])
    return {"n": len(mean), **within, "neg": len(neg_texts), "neg_empty": len(empty),
            "worst_written_organ": max((r["as_written_organ_dice"] for r in neg), default=0.0),
            "worst_mapped_organ": max((r["mapped_organ_dice"] for r in neg), default=0.0),
            "val_ok": val_ok, "val_n": len(w["validation"])}  # fmt: skip


def block(r: dict[str, Any]) -> str:
    s = r["settings"]
    seg_lines, seg = segmentation(r["segmentation"])
    t1 = r["t1_mismatch"]
    right = float(np.mean([x["dice"] for x in t1 if x["t1"] == "right"]))
    wrong = float(np.mean([x["dice"] for x in t1 if x["t1"] == "wrong"]))
    oc = r["organ_control"]
    shared = [x["shared voxels"] for x in oc]
    ad = r["adaptation"]
    test = [x["dice"] for x in ad["test"]]
    val_pancreas = next(iter(ad["new_task"]["dice"].values()))
    prog = {p["mode"]: p["text"] for p in r["prognosis"].get("summary", [])}
    para = defaultdict(list)
    for x in r["paraphrases"]:
        para[x["target"]].append(x["dice"])
    sds = [float(np.std(v, ddof=1)) for v in para.values() if len(v) > 1]
    w = wordings(r["unseen_wordings"])
    tr = r["training"]
    sec = r["seconds"]
    resumed = sec["training"] < 0.05 * s["iterations"]  # far below any machine's training time
    lines = [
        f"One run of `duplus demo` (seed {s['seed']}, test seed {s['test_seed']}, {s['threads']} CPU threads; "
        f"{sum(sec.values()):.0f} s on a shared 2-core machine: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in sec.items() if v >= 1)
        + (
            "; its training step resumed the finished checkpoint of an interrupted run of the same "
            "training code and data, so that step's seconds are not a training time"
            if resumed
            else ""
        )
        + "), read from `experiments/results/demo_results.json` by `experiments/readme_numbers.py`.",
        "",
        "#### Test (untouched)",
        "",
        f"{seg['cases']} test cases ({s['test_cases']} per trained dataset, from test seed {s['test_seed']}, each "
        "segmented in its own oblique / non-RAS / anisotropic geometry):",
        "",
        *seg_lines,
        "",
        f"Organs and tissues **{seg['organs']:.3f}** ({seg['n_organs']} targets), lesions {seg['lesions']:.3f}, "
        f"mean {seg['mean']:.3f}.",
        "",
        "| experiment (test cases) | result |",
        "|---|---|",
        f"| (a) wrong T1 prompt on the abdominal CT and MRI cases | mean Dice {right:.3f} -> **{wrong:.3f}** |",
        f"| (b) T2 toggled liver <-> spleen on the same CT | shared voxels {', '.join(map(str, shared))} |",
        f"| (c) adaptation to the held-out pancreas, {len(test)} test cases | Dice **{np.mean(test):.3f}** "
        f"(sd {np.std(test):.3f}, {min(test):.3f}-{max(test):.3f}) |",
        "| (c) prognosis, cross-validated C-index on the test-seed cohort | "
        + ", ".join(f"{k} {v}" for k, v in prog.items())
        + " |",
        f"| (d) paraphrases of the training templates | Dice sd per target {min(sds):.3f}-{max(sds):.3f} |",
        f"| (e) held-out test wordings naming a trained target | within 2 Dice points of the canonical name: "
        f"**{w['mapped']}/{w['n']} mapped**, {w['as_written']}/{w['n']} as written |",
        f"| (e) test wordings naming no trained target | {w['neg_empty']}/{w['neg']} get an empty mask and a "
        f"warning; best Dice with a labelled organ: {w['worst_mapped_organ']:.3f} mapped, "
        f"{w['worst_written_organ']:.3f} as written |",
        "",
        "#### Validation (used for choosing)",
        "",
        "| figure | value |",
        "|---|---|",
        f"| training's validation cases at its last validation (choose the checkpoint): organs / all | "
        f"{tr.get('dice/organs', float('nan')):.3f} / {tr.get('dice/mean', float('nan')):.3f} |",
        f"| pancreas adapter on its validation cases | {val_pancreas:.3f} |",
        f"| validation wordings resolved correctly (chose the mapping's thresholds) | {w['val_ok']}/{w['val_n']} |",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv:
        COPY.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(argv[0], COPY)
    text = README.read_text()
    if START not in text or END not in text:
        print(f"README.md has no {START} ... {END} block", file=sys.stderr)
        return 1
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{START}\n{block(json.loads(COPY.read_text()))}{END}{tail}")
    print(f"README.md numbers block written from {COPY}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

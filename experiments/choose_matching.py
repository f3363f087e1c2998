"""Choose the free-text mapping's thresholds on the VALIDATION wordings (issue #23). Not in CI.

    python experiments/choose_matching.py     # ~1 min; writes experiments/results/matching_choice.json

The score of a setting is the balanced accuracy over the validation wordings of
:mod:`duplus.demo.wordings`: the share of wordings naming a trained target that map to that
target, averaged with the share of wordings naming none that stay unmatched. The demo model's
trained targets are those of the datasets it trains on.

Two levels are chosen. First the design: each combination of the three optional measures
(``glossary`` descriptions, ``decoys`` for untrained targets, subsequence ``abbreviations``) is
scored at its best thresholds; the best design wins, a tie going to the one with fewer measures.
Then its thresholds: among the settings with the best score, the one at the centre of the tie
(the median along each axis). The test wordings are not read here.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from duplus.data.phantoms import PHANTOM_DATASETS
from duplus.demo.steps import TRAINED as TRAINED_DATASETS
from duplus.demo.wordings import VALIDATION, WORDING_CLASSES
from duplus.text.encoder import TextEncoder
from duplus.text.matching import TargetMatcher

RESULT = Path(__file__).resolve().parent / "results" / "matching_choice.json"
SPELLING = [0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9]
EMBEDDING = [0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8]
MARGIN = [0.0, 0.01, 0.02, 0.03, 0.05, 0.08]
DESIGNS = [dict(zip(("glossary", "decoys", "abbreviations"), d, strict=True))
           for d in itertools.product((False, True), repeat=3)]  # fmt: skip
BRAIN = {"white matter", "grey matter", "cerebrospinal fluid"}


def trained_targets() -> list[str]:
    return list(
        dict.fromkeys(t for d in PHANTOM_DATASETS if d.task in TRAINED_DATASETS for t in d.labels.values())
    )


def score(matcher: TargetMatcher) -> tuple[float, list[dict[str, Any]]]:
    rows = []
    for w in VALIDATION:
        modality = "MRI" if w.target in BRAIN else "CT"
        m = matcher.match([w.text], modality)[0]
        rows.append({"text": w.text, "kind": w.kind, "want": w.target, "got": m.target, "how": m.how,
                     "similarity": m.similarity, "ok": m.target == w.target})  # fmt: skip
    pos = [r["ok"] for r in rows if r["want"] is not None]
    neg = [r["ok"] for r in rows if r["want"] is None]
    return 0.5 * (float(np.mean(pos)) + float(np.mean(neg))), rows


def main() -> int:
    torch.set_num_threads(2)
    encoder = TextEncoder("default")
    cache: dict[str, torch.Tensor] = {}

    def embed(texts: list[str]) -> torch.Tensor:
        new = [t for t in dict.fromkeys(texts) if t not in cache]
        if new:
            cache.update(zip(new, encoder.encode(new), strict=True))
        return torch.stack([cache[t] for t in texts])

    targets = trained_targets()
    designs = []
    for design in DESIGNS:
        grid = []
        for s, e, m in itertools.product(SPELLING, EMBEDDING, MARGIN):
            matcher = TargetMatcher(
                targets, embed, spelling_threshold=s, embedding_threshold=e, embedding_margin=m, **design
            )
            grid.append({"spelling": s, "embedding": e, "margin": m, "score": score(matcher)[0]})
        designs.append({**design, "best_score": max(g["score"] for g in grid), "grid": grid})
        print(json.dumps({k: v for k, v in designs[-1].items() if k != "grid"}), flush=True)
    top = max(d["best_score"] for d in designs)
    design_rows = [{k: v for k, v in d.items() if k != "grid"} for d in designs]
    winner = min((d for d in designs if d["best_score"] == top), key=lambda d: sum(d[k] for k in DESIGNS[0]))
    design = {k: winner[k] for k in DESIGNS[0]}
    grid = winner["grid"]
    best = top
    ties = [g for g in grid if g["score"] == best]
    centre = {k: float(np.median([g[k] for g in ties])) for k in ("spelling", "embedding", "margin")}
    snap = {
        k: min(axis, key=lambda v: abs(v - centre[k]))
        for k, axis in zip(centre, (SPELLING, EMBEDDING, MARGIN), strict=True)
    }
    chosen = snap if any(all(g[k] == snap[k] for k in snap) for g in ties) else {
        k: v for k, v in min(ties, key=lambda g: sum(abs(g[k] - centre[k]) for k in centre)).items() if k in centre
    }  # fmt: skip
    final_score, rows = score(TargetMatcher(targets, embed, spelling_threshold=chosen["spelling"],
                                            embedding_threshold=chosen["embedding"], embedding_margin=chosen["margin"],
                                            **design))  # fmt: skip
    by_class = {
        k: f"{sum(r['ok'] for r in rows if r['kind'] == k)}/{sum(r['kind'] == k for r in rows)}"
        for k in WORDING_CLASSES
    }
    result = {
        "what": "free-text mapping thresholds chosen on the validation wordings (experiments/choose_matching.py)",
        "trained_targets": targets,
        "chosen": {**chosen, **design},
        "designs": design_rows,
        "validation_balanced_accuracy": final_score,
        "ties": len(ties),
        "grid_points": len(grid),
        "by_class": by_class,
        "rows": rows,
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps({k: result[k] for k in ("chosen", "validation_balanced_accuracy", "ties", "by_class")}))
    for r in rows:
        if not r["ok"]:
            print("miss:", r)
    return 0


if __name__ == "__main__":
    sys.exit(main())

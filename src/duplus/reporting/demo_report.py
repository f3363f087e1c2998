"""The demo's Markdown report: tables and figures filled from one run's results (nothing hard-coded)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from duplus.data.label_space import is_lesion
from duplus.fileio import atomic_path, write_text_atomic
from duplus.reporting.wording_report import TEST_TAG, VALIDATION_TAG, split_legend, unseen_wording_section


def _fmt(x: Any, digits: int = 3) -> str:
    if isinstance(x, float):
        return "n/a" if math.isnan(x) else f"{x:.{digits}f}"
    return str(x)


def markdown_table(df: pd.DataFrame, digits: int = 3) -> str:
    if df.empty:
        return "_no rows_\n"
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(_fmt(row[c], digits) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def segmentation_table(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    g = df.groupby(["dataset", "modality", "target"], sort=False)
    out = g.agg(cases=("dice", "size"), dice=("dice", "mean"), hd95_mm=("hd95", "mean"), nsd=("nsd", "mean"))
    return out.reset_index()


def t1_table(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    pivot = df.pivot_table(
        index=["dataset", "target"], columns="t1", values="dice", aggfunc="mean", sort=False
    )
    pivot = pivot.reset_index()
    pivot["drop"] = pivot["right"] - pivot["wrong"]
    prompts = df.groupby("t1")["prompt"].first()
    pivot = pivot.rename(columns={"right": "Dice, right T1", "wrong": "Dice, wrong T1"})
    pivot.attrs["prompts"] = prompts.to_dict()
    return pivot


def paraphrase_table(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    per_prompt = df.groupby(["target", "prompt"], sort=False)["dice"].mean().reset_index()
    return per_prompt


def dice_bars(table: pd.DataFrame, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r.dataset.replace('Phantom', '')}\n{r.target}" for r in table.itertuples()]
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(labels)), 3.6))
    colours = {"CT": "#3070b0", "MRI": "#c05030", "PET": "#40a040", "PETCT": "#8050a0"}
    ax.bar(range(len(labels)), table["dice"], color=[colours.get(m, "grey") for m in table["modality"]])
    ax.axhline(0.85, color="k", lw=0.8, ls="--")
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("Dice (held-out cases)")
    ax.set_title("Dice per target; colour = modality; dashed = 0.85", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def write_report(out: Path, results: dict[str, Any]) -> Path:
    """Write ``out/report.md`` from the demo's ``results``; return its path."""
    figures = out / "figures"
    lines = [
        *_header(out, results),
        *_segmentation_section(results, figures),
        *brain_section(results.get("brain_model") or {}),
        *_t1_section(results["t1_mismatch"]),
        *_organ_section(results["organ_control"]),
        *_adaptation_section(results.get("adaptation") or {}, figures),
        *_prognosis_section(results.get("prognosis") or {}),
        *_paraphrase_section(results["paraphrases"], results["settings"]["paraphrases"]),
        *unseen_wording_section(results.get("unseen_wordings") or {}, markdown_table),
    ]
    path = out / "report.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def _header(out: Path, results: dict[str, Any]) -> list[str]:
    """Title, the run's data and seeds, the validation/test legend and the timings."""
    s = results["settings"]
    return [
        "# DuPLUS demo report",
        "",
        f"Run folder `{out}`; {'QUICK smoke run: numbers are not meaningful' if s['quick'] else 'full demo run'}; "
        f"seed {s['seed']}; {s['threads']} CPU threads.",
        "",
        "Data: the synthetic phantom collection (`duplus make-phantoms`), "
        f"{s['cases']} training and {s['test_cases']} held-out cases per dataset "
        f"({s['adapt_cases']} and {s['adapt_test_cases']} in the pancreas set the adaptation learns from), "
        f"{s['shape']}^3 voxels over 96 mm; "
        f"prognosis cohort of {s['cohort']} PET/CT patients in the HECKTOR 2022 layout.",
        "",
        *split_legend(s.get("test_seed", s["seed"]), s["seed"]),
        "## Timings",
        "",
        markdown_table(pd.DataFrame([{"step": k, "seconds": v} for k, v in results["seconds"].items()]), 1),
        f"Total: {sum(results['seconds'].values()):.0f} s. Text-encoder forward passes in the training loop after "
        f"the prompt-cache warm-up: {int(results['training'].get('encoder_calls_after_warmup', -1))}.",
        "",
    ]


def _segmentation_section(results: dict[str, Any], figures: Path) -> list[str]:
    """Dice per target on the held-out cases, its bar chart and the overlays."""
    seg = segmentation_table(results["segmentation"])
    lines = [
        f"## Segmentation of held-out cases by prompt — {TEST_TAG}",
        "",
        "Each case is segmented in its own geometry (oblique, non-RAS and anisotropic cases included) with its "
        "dataset's T1 prompt and the canonical target names as T2 prompts.",
        "",
        markdown_table(seg),
        *_validation_line(results["training"]),
    ]
    if seg.empty:
        return lines
    dice_bars(seg, figures / "dice_bars.png")
    lesion = seg["target"].map(is_lesion).astype(bool)
    split = (
        f" Organs and tissues: **{seg.loc[~lesion, 'dice'].mean():.3f}** ({int((~lesion).sum())} targets); "
        f"lesions (tumours, lymph nodes): **{seg.loc[lesion, 'dice'].mean():.3f}** ({int(lesion.sum())} targets)."
        if lesion.any() and (~lesion).any()
        else ""
    )
    lines += [
        f"Mean Dice over targets: **{seg['dice'].mean():.3f}**.{split}",
        "",
        "![Dice per target](figures/dice_bars.png)",
        "",
    ]
    for png in sorted(figures.glob("overlay_*.png")):
        lines += [f"![{png.stem}](figures/{png.name})", ""]
    return lines


def _t1_section(rows: list[dict]) -> list[str]:
    """(a) the same image with the right and with a wrong T1 prompt."""
    t1 = t1_table(rows)
    lines = [f"## (a) T1 mismatch: the right modality prompt against a wrong one — {TEST_TAG}", ""]
    if t1.empty:
        return lines
    wrong = sorted(set(r["prompt"] for r in rows if r["t1"] == "wrong"))
    return lines + [
        "Same image, same modality stem, same T2 prompts; only the T1 text changes. Wrong prompts used: "
        + ", ".join(f"`{p}`" for p in wrong),
        "",
        markdown_table(t1),
        f"Mean Dice: right T1 **{t1['Dice, right T1'].mean():.3f}**, wrong T1 **{t1['Dice, wrong T1'].mean():.3f}**.",
        "",
    ]


def _organ_section(rows: list[dict]) -> list[str]:
    """(b) one CT volume asked for two organs in turn."""
    return [
        f"## (b) Organ control: toggling T2 between two organs — {TEST_TAG}",
        "",
        "The same CT volume and T1 prompt, asked once for `liver` and once for `spleen`.",
        "",
        markdown_table(pd.DataFrame(rows)),
    ]


def _paraphrase_section(rows: list[dict], paraphrases: int) -> list[str]:
    """(d) Dice over paraphrases drawn from the training wordings."""
    para = paraphrase_table(rows)
    lines = [f"## (d) Prompt-paraphrase robustness (training wordings) — {TEST_TAG}", ""]
    if para.empty:
        return lines
    spread = (
        para.groupby("target", sort=False)["dice"].agg(["mean", "std", "min", "max", "count"]).reset_index()
    )
    return lines + [
        f"Dice of each target over {paraphrases} paraphrases of its T2 prompt (used verbatim).",
        "",
        markdown_table(spread.rename(columns={"count": "prompts"})),
        "<details><summary>Per prompt</summary>",
        "",
        markdown_table(para),
        "</details>",
        "",
    ]


def _validation_line(training: dict[str, Any]) -> list[str]:
    """The training's last validation Dice, which chose the checkpoint used above."""
    organs, mean = training.get("dice/organs"), training.get("dice/mean")
    if organs is None and mean is None:
        return []
    parts = [
        f"organs and tissues {organs:.3f}" if organs is not None else "",
        f"all targets {mean:.3f}" if mean is not None else "",
    ]
    return [
        f"For comparison, **{VALIDATION_TAG}**: Dice on the training's validation cases at its last "
        f"validation (they choose the best checkpoint): {', '.join(p for p in parts if p)}.",
        "",
    ]


def _adaptation_section(a: dict, figures: Path) -> list[str]:
    lines = ["## (c1) Adaptation to a held-out organ (pancreas)", ""]
    if not a:
        return lines + ["_not run_", ""]
    if a.get("markdown"):  # the adaptation report's sections become subsections of this one
        body = re.sub(r"^(#+) ", r"#\1 ", a["markdown"].strip("\n"), flags=re.MULTILINE)
        lines += [
            f"The adaptation's own report follows: its Dice figures are **{VALIDATION_TAG}** (the "
            "adaptation's validation cases, split off its training cases), except the test table after it.",
            "",
            body,
            "",
        ]
    else:
        lines += ["```", str({k: v for k, v in a.items() if k != "test"}), "```", ""]
    test = pd.DataFrame(a.get("test") or [])
    if not test.empty:
        cols = ["case", "target", "dice", "hd95", "nsd"]
        lines += [
            f"### New target on the held-out test cases — {TEST_TAG}",
            "",
            "The base checkpoint with the adapter (as `duplus segment --adapter`), each case in its own "
            "geometry; the validation Dice above comes from the adaptation's own validation cases.",
            "",
            markdown_table(test[cols].rename(columns={"hd95": "hd95_mm"})),
            f"Mean Dice over {len(test)} case(s): **{test['dice'].mean():.3f}** "
            f"(sd {test['dice'].std(ddof=0):.3f}, {test['dice'].min():.3f}-{test['dice'].max():.3f}).",
            "",
        ]
    name = Path(a.get("test_figure") or "").name  # a file in the run's figures folder
    if name and (figures / name).is_file():
        lines += [f"![{Path(name).stem}](figures/{name})", ""]
    return lines


def _prognosis_section(p: dict) -> list[str]:
    lines = ["## (c2) Prognosis: image, EHR and both", ""]
    if not p:
        return lines + ["_not run_", ""]
    lines += [
        f"**{TEST_TAG}**: cross-validated C-indices on a cohort drawn from the test seed; no prognosis "
        "setting was chosen on it (they were chosen on cohorts of the training seed, or by inner CV "
        "on each training fold).",
        "",
        "`ehr-text`: the record as text only (the paper's path); `ehr`: text + clinical columns; "
        "`(no notes)`: without the free-text notes column; image features pooled in the `given` "
        "(ground-truth) tumour masks or in the segmentation model's own `predicted` masks.",
        "",
    ]
    if p.get("markdown"):
        lines += [p["markdown"], ""]
    if p.get("km_figure"):
        lines += [f"![Kaplan-Meier by predicted risk group](figures/{Path(p['km_figure']).name})", ""]
    return lines


def brain_section(brain: dict[str, Any]) -> list[str]:
    """The packaged brain model on the real MNI152 T1, or a line saying it is not packaged."""
    lines = ["## Brain model on a real MRI (the MNI152 T1)", ""]
    if not brain.get("available"):
        reason = brain.get("reason", "not run")
        return [
            *lines,
            f"Not measured: {reason}. The brain-tissue model is not packaged with this install.",
            "",
        ]
    card = brain.get("card") or {}
    dice = ", ".join(f"{t} {v:.3f}" for t, v in brain["dice"].items())
    return [
        *lines,
        f"Model `{brain['model']}` (trained on synthetic heads only; card: {card.get('name', brain['model'])}, "
        f"step {card.get('step', '?')}). Test on the real MNI152 T1 at 2 mm, whose intensities it never saw; "
        "reference from nilearn's GM/WM maps by the generator's rule.",
        "",
        f"Dice (test): {dice}. Mask voxels outside the brain outline: {brain['outside_outline']} of "
        f"{brain['mask_voxels']}.",
        "",
        f"![brain model on the MNI152 T1](figures/{brain['figure']})",
        "",
    ]

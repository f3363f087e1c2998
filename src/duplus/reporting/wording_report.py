"""The demo report's unseen-wording section, and the legend of which figures are validation or test."""

from __future__ import annotations

from typing import Any

import pandas as pd

VALIDATION_TAG = "validation (used for choosing)"
TEST_TAG = "test (untouched)"
WITHIN = 0.02  # "within 2 Dice points of the canonical name"


def split_legend(test_seed: int, seed: int) -> list[str]:
    """The paragraph that says which of the report's figures are validation and which test."""
    return [
        f"Every figure below is marked **{VALIDATION_TAG}** or **{TEST_TAG}**. Validation cases are split "
        f"off the training cases (collection seed {seed}) and chose the best checkpoint or a setting. Test "
        f"cases and the prognosis cohort are drawn from test seed {test_seed}, a generator stream apart "
        "from every training case, and no setting of the demo was chosen on them; the demo's settings were "
        "chosen earlier on cases of the training seed (docs/EXPERIMENTS.md).",
        "",
    ]


def per_wording(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per test wording naming a trained target: mean Dice over cases, canonical, as written, mapped."""
    df = pd.DataFrame([r for r in rows if r.get("target") is not None])
    if df.empty:
        return df
    keys = ["kind", "text", "target", "resolved", "how", "similarity"]
    g = df.groupby(keys, sort=False, dropna=False)[["canonical", "as_written", "mapped"]].mean().reset_index()
    g["within_written"] = (g["canonical"] - g["as_written"]) <= WITHIN
    g["within_mapped"] = (g["canonical"] - g["mapped"]) <= WITHIN
    return g


def class_table(words: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Per wording class (in the order of ``classes``): wordings, mean Dice (canonical, as written,
    mapped), share within 2 points."""
    order = [k for k in classes if k in set(words["kind"])]
    out = []
    for kind in order:
        w = words[words["kind"] == kind]
        out.append({"wording class": kind, "wordings": len(w), "canonical name": w["canonical"].mean(),
                    "as written": w["as_written"].mean(), "mapped": w["mapped"].mean(),
                    "within 2 points, as written": f"{int(w['within_written'].sum())}/{len(w)}",
                    "within 2 points, mapped": f"{int(w['within_mapped'].sum())}/{len(w)}"})  # fmt: skip
    return pd.DataFrame(out)


def negative_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame([r for r in rows if r.get("target") is None])
    if df.empty:
        return df
    cols = ["as_written_voxels", "as_written_organ_dice", "mapped_voxels", "mapped_organ_dice"]
    g = df.groupby(["text", "how"], sort=False, dropna=False)[cols].mean().reset_index()
    return g.rename(
        columns={
            "as_written_voxels": "voxels, as written",
            "as_written_organ_dice": "best organ Dice, as written",
            "mapped_voxels": "voxels, mapped",
            "mapped_organ_dice": "best organ Dice, mapped",
        }  # fmt: skip
    )


def t1_wording_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    mean = df.groupby(["dataset", "t1", "canonical"], sort=False)["dice"].mean().reset_index()
    ref = mean[mean["canonical"]].set_index("dataset")["dice"]
    mean["drop vs canonical T1"] = mean["dataset"].map(ref) - mean["dice"]
    return mean.drop(columns="canonical").rename(
        columns={"t1": "T1 prompt (as written)", "dice": "mean Dice"}
    )


def unseen_wording_section(result: dict[str, Any], markdown_table: Any) -> list[str]:
    """The report's section (e) from :func:`duplus.demo.wording_experiment.unseen_wording_experiment`."""
    lines = [f"## (e) Unseen wordings — {TEST_TAG}", ""]
    if not result:
        return lines + ["_not run_", ""]
    words = per_wording(result["t2"])
    lines += [
        "Wordings held out from training (none is a training prompt; `duplus.demo.wordings`), each on the "
        "test cases of its organ's dataset (abdominal CT; brain MRI). *As written*: the text goes to the text "
        "encoder unchanged (`exact_prompts`). *Mapped*: the predictor's default path resolves it to a trained "
        "target first (synonym table, spelling, or meaning in the encoder's space; `duplus.text.matching`), "
        "or leaves the mask empty with a warning. The mapping's thresholds were chosen on a separate set of "
        "validation wordings, shown at the end.",
        "",
    ]
    if not words.empty:
        n, ok, ok_w = len(words), int(words["within_mapped"].sum()), int(words["within_written"].sum())
        lines += [
            markdown_table(class_table(words, list(result.get("classes") or words["kind"].unique()))),
            f"Test wordings naming a trained target within {WITHIN * 100:.0f} Dice points of the canonical "
            f"name: **{ok}/{n} ({100 * ok / n:.0f} %) mapped**, {ok_w}/{n} ({100 * ok_w / n:.0f} %) as written.",
            "",
        ]
        fails = words[~words["within_mapped"]]
        if not fails.empty:
            lines += ["What fails (mapped):", ""]
            for r in fails.itertuples():
                sim = "" if pd.isna(r.similarity) else f", similarity {r.similarity:.2f}"
                read = r.resolved if isinstance(r.resolved, str) else "nothing"
                lines.append(
                    f"- `{r.text}` ({r.kind}, names {r.target}): read as {read} ({r.how}{sim});"
                    f" Dice {r.mapped:.3f} against {r.canonical:.3f}"
                )
            lines.append("")
        lines += ["<details><summary>Per wording</summary>", "", markdown_table(words), "</details>", ""]
    neg = negative_table(result["t2"])
    if not neg.empty:
        lines += [
            "Wordings that name no trained target (abdominal CT test cases): the mask's size and its best Dice "
            "with any labelled organ of the case, as written and mapped (mapped: empty, with a warning, "
            "unless the mapping read it as a trained target).",
            "",
            markdown_table(neg),
        ]
    t1 = t1_wording_table(result.get("t1") or [])
    if not t1.empty:
        lines += [
            "T1 wordings (used as written; the T1 prompt is not mapped), with the canonical T2 names:",
            "",
            markdown_table(t1),
        ]
    val = pd.DataFrame(result.get("validation") or [])
    if not val.empty:
        per_class = val.groupby("kind", sort=False)["correct"].agg(["sum", "count"]).reset_index()
        per_class["resolved correctly"] = (
            per_class["sum"].astype(int).astype(str) + "/" + per_class["count"].astype(str)
        )
        lines += [
            f"The validation wordings ({VALIDATION_TAG}: they chose the thresholds), resolved by the mapping "
            f"(correct: the target they name, or nothing for those naming none): "
            f"{int(val['correct'].sum())}/{len(val)}.",
            "",
            markdown_table(
                per_class[["kind", "resolved correctly"]].rename(columns={"kind": "wording class"})
            ),
        ]
    return lines

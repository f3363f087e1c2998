"""The adaptation report: ``RUN/adapt_report.json`` and ``RUN/adapt_report.md``.

It says what trained and how much of the model that is, how well the new targets are segmented,
and how much the original targets lost (forgetting): Dice on the base run's validation cases with
the original prompts, before and after adaptation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from duplus.fileio import write_json_atomic, write_text_atomic

__all__ = ["compute_forgetting", "render_markdown", "summary_lines", "write_report"]


def compute_forgetting(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """Per ``dataset/target`` Dice before, after and their difference, plus the means.

    Deltas are ``after - before`` in Dice points (0-1 scale); negative means forgetting.
    """
    rows = {
        k: {"before": before[k], "after": after[k], "delta": after[k] - before[k]}
        for k in before
        if k in after
    }
    deltas = [r["delta"] for r in rows.values()]
    return {
        "per_target": rows,
        "mean_before": float(np.mean([r["before"] for r in rows.values()])) if rows else None,
        "mean_after": float(np.mean([r["after"] for r in rows.values()])) if rows else None,
        "mean_delta": float(np.mean(deltas)) if rows else None,
        "worst_delta": float(min(deltas)) if rows else None,
        "max_abs_delta": float(max(abs(d) for d in deltas)) if rows else None,
    }


def _fmt(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables."""
    p = report["parameters"]
    lines = [
        "# DuPLUS adaptation report",
        "",
        f"- base checkpoint: `{report['base_checkpoint']['path']}` (sha256 `{report['base_checkpoint']['sha256'][:16]}`)",
        f"- trained: {', '.join(report['train'])}"
        + (
            " (text side only)" if report["text_side_only"] else f"; network scope: {report['network_scope']}"
        ),
        f"- trainable parameters: {p['trainable']:,} of {p['total']:,} ({100 * p['fraction']:.3f}%; "
        f"network {p['network_trainable']:,} of {p['network_total']:,}, text encoder "
        f"{p['text_encoder_trainable']:,} of {p['text_encoder_total']:,})",
        f"- adapter: `{report['adapter']['path']}`, {report['adapter']['size_kb']:.1f} KB",
    ]
    if report.get("merged"):
        lines.append(f"- merged checkpoint: `{report['merged']}`")
    lines += [
        f"- steps: {report['steps']}, {report['seconds']:.0f} s",
        f"- adapted prompts (routed through the text adapter): {report['scoped_prompts']}",
        "",
        "## New task (validation Dice)",
        "",
        "| dataset | target | new target | Dice |",
        "|---|---|---|---|",
    ]
    for key, d in report["new_task"]["dice"].items():
        ds, target = key.split("/", 1)
        new = "yes" if target in report["new_task"]["added_targets"] else "no"
        lines.append(f"| {ds} | {target} | {new} | {d:.4f} |")
    orig = report["original"]
    lines += ["", "## Original targets: forgetting (Dice on the base run's validation cases)", ""]
    if orig.get("skipped"):
        lines.append(f"Not measured: {orig['skipped']}")
    else:
        lines += ["| dataset | target | before | after | delta |", "|---|---|---|---|---|"]
        for key, r in orig["per_target"].items():
            ds, target = key.split("/", 1)
            lines.append(f"| {ds} | {target} | {r['before']:.4f} | {r['after']:.4f} | {r['delta']:+.4f} |")
        lines.append(
            f"| **mean** | | {_fmt(orig['mean_before'])} | {_fmt(orig['mean_after'])} | "
            f"{'n/a' if orig['mean_delta'] is None else format(orig['mean_delta'], '+.4f')} |"
        )
        lines += ["", f"Validation cases per dataset: at most {orig['cases_per_dataset']}."]
    if report["text_side_only"]:
        lines += [
            "",
            "Only text-side adapters trained: the original prompts are embedded by the frozen base "
            "encoder and the network is unchanged, so the original targets' outputs are identical by "
            "construction (zero forgetting).",
        ]
    elif report["network_scope"] == "task":
        lines += [
            "",
            "Network parts trained task-scoped: the adapted network serves only the new task's prompts; "
            "the original targets with their original prompts run through the unchanged base network "
            "and base text encoder, so their outputs are identical by construction (zero forgetting).",
        ]
    else:
        lines += [
            "",
            "Network parts trained shared (network_scope: shared): every target runs through the adapted "
            "network, so the original targets can change; the table above measures it.",
        ]
    return "\n".join(lines) + "\n"


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A few lines for the terminal."""
    p = report["parameters"]
    lines = [
        f"adapter: {report['adapter']['path']} ({report['adapter']['size_kb']:.1f} KB); trained {', '.join(report['train'])}: "
        f"{p['trainable']:,} of {p['total']:,} parameters ({100 * p['fraction']:.3f}%)",
    ]
    new = report["new_task"]["dice"]
    if new:
        lines.append("new task Dice: " + ", ".join(f"{k.split('/', 1)[1]} {v:.3f}" for k, v in new.items()))
    orig = report["original"]
    if orig.get("skipped"):
        lines.append(f"forgetting: not measured ({orig['skipped']})")
    elif orig["mean_before"] is not None:
        lines.append(
            f"original targets mean Dice {orig['mean_before']:.4f} -> {orig['mean_after']:.4f} "
            f"(delta {orig['mean_delta']:+.4f}, worst {orig['worst_delta']:+.4f})"
            + (
                " [zero by construction: "
                + ("text side only]" if report["text_side_only"] else "task-scoped network]")
                if report["zero_forgetting_by_construction"]
                else ""
            )
        )
    if report.get("merged"):
        lines.append(f"merged checkpoint: {report['merged']}")
    lines.append(f"report: {report['report_md']}")
    return lines


def write_report(run_dir: Path, report: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``adapt_report.json`` and ``adapt_report.md`` into ``run_dir``."""
    json_path, md_path = run_dir / "adapt_report.json", run_dir / "adapt_report.md"
    report["report_md"] = str(md_path)
    write_json_atomic(json_path, report)
    write_text_atomic(md_path, render_markdown(report))
    return json_path, md_path

"""Overlay figures: an image slice with coloured target masks, for reports."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from duplus.fileio import atomic_path

COLOURS = [
    (0.90, 0.10, 0.10),
    (0.10, 0.60, 0.95),
    (0.20, 0.80, 0.20),
    (0.95, 0.75, 0.10),
    (0.70, 0.30, 0.90),
    (0.10, 0.85, 0.80),
    (0.95, 0.45, 0.70),
    (0.55, 0.55, 0.10),
]


def _to_ras(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Reorient ``(..., I, J, K)`` data to the closest RAS axis order, for display."""
    ornt = nib.orientations.io_orientation(affine)
    lead = array.ndim - 3
    full = np.concatenate([np.array([[i, 1] for i in range(lead)]).reshape(-1, 2), ornt + [lead, 0]], axis=0)
    return nib.orientations.apply_orientation(array, full)


def save_overlay(
    image: np.ndarray,
    affine: np.ndarray,
    masks: np.ndarray,
    targets: list[str],
    path: str | Path,
    *,
    title: str = "",
    reference: np.ndarray | None = None,
) -> Path:
    """Write a PNG with an axial and a coronal slice through the largest mask, masks in colour.

    Args:
        image: ``(I, J, K)`` intensities (first channel for multi-channel images).
        affine: the image affine (the figure is shown in RAS orientation).
        masks: ``(K, I, J, K)`` binary predicted masks.
        targets: the K target names (legend).
        path: output ``.png``.
        title: figure title.
        reference: optional ``(K, I, J, K)`` reference masks, drawn as contours.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    img = _to_ras(np.asarray(image, dtype=np.float32), affine)
    msk = _to_ras(np.asarray(masks, dtype=np.uint8), affine)
    ref = _to_ras(np.asarray(reference, dtype=np.uint8), affine) if reference is not None else None
    union = msk.any(axis=0) if msk.size else np.zeros(img.shape, bool)
    if union.any():
        z = int(np.argmax(union.sum(axis=(0, 1))))
        y = int(np.argmax(union.sum(axis=(0, 2))))
    else:
        z, y = img.shape[2] // 2, img.shape[1] // 2
    ornt = nib.orientations.io_orientation(affine)
    spacing = np.empty(3)
    spacing[ornt[:, 0].astype(int)] = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    lo, hi = np.percentile(img, [1, 99])
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.4))
    views = ((axes[0], np.s_[:, :, z], "axial", 1), (axes[1], np.s_[:, y, :], "coronal", 2))
    for ax, sl, name, row_axis in views:
        base = np.clip((img[sl] - lo) / max(hi - lo, 1e-6), 0, 1)
        rgb = np.stack([base] * 3, axis=-1)
        for k in range(msk.shape[0]):
            colour = np.array(COLOURS[k % len(COLOURS)])
            m = msk[k][sl] > 0
            rgb[m] = 0.55 * rgb[m] + 0.45 * colour
        # voxels drawn at their size in mm (a 1 x 1 x 3 mm image is not squashed)
        ax.imshow(np.transpose(rgb, (1, 0, 2)), origin="lower", aspect=float(spacing[row_axis] / spacing[0]))
        if ref is not None:
            for k in range(ref.shape[0]):
                if ref[k][sl].any():
                    ax.contour(ref[k][sl].T, levels=[0.5], colors=[COLOURS[k % len(COLOURS)]], linewidths=0.8)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    handles = [Patch(color=COLOURS[k % len(COLOURS)], label=t) for k, t in enumerate(targets)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(targets), 4), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path

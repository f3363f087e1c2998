"""The synthetic head MRI generator (``make-phantoms --anatomy mni152``): seconds per case.

1. Loading the MNI152 maps from nilearn and building the head maps (once per process).
2. ``make_synth_head_case`` at the default size (2 mm, 192 x 224 x 192 mm: 96 x 112 x 96 voxels),
   one process; the median over ``--cases`` seeds.
3. ``make_synth_head`` writing a dataset of ``--cases`` cases (NIfTI compression included).

    python benchmarks/bench_synth.py            # ~1 min
    python benchmarks/bench_synth.py --figure docs/figures/synth_heads.png   # also a mosaic of cases
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import _env  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)
import numpy as np
from common import load_average, machine_info, setup_threads, write_result

from duplus.data.phantoms import load_mni152_head_maps, make_synth_head, make_synth_head_case


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--figure", type=Path, default=None, help="write a mosaic of the first 4 cases")
    args = parser.parse_args()
    setup_threads(1)
    start = time.perf_counter()
    maps = load_mni152_head_maps(2)
    maps_s = time.perf_counter() - start
    seconds, shape = [], None
    for seed in range(args.cases):
        start = time.perf_counter()
        shape = make_synth_head_case(seed, maps).image.shape
        seconds.append(time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        make_synth_head(tmp, cases=args.cases, test_cases=0, progress=False)
        write_s = time.perf_counter() - start
    payload = {
        "machine": machine_info(1),
        "load_average": load_average(),
        "maps_seconds": round(maps_s, 2),
        "case_seconds": [round(s, 2) for s in seconds],
        "case_seconds_median": round(statistics.median(seconds), 2),
        "case_shape": list(shape or ()),
        "dataset_cases": args.cases,
        "dataset_write_seconds_per_case": round(write_s / args.cases, 2),
    }
    print(payload)
    write_result("synth", payload)
    if args.figure:
        save_mosaic(args.figure, [make_synth_head_case(seed, maps) for seed in range(4)])


def save_mosaic(path: Path, cases: list) -> None:
    """Mid-sagittal, coronal and axial slices (RAS view) of each case, image above its labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib

    fig, axes = plt.subplots(2 * len(cases), 3, figsize=(6, 4 * len(cases)))
    for row, case in enumerate(cases):
        image, label = (
            np.asarray(nib.as_closest_canonical(nib.Nifti1Image(a, case.affine)).dataobj)
            for a in (case.image, case.label)
        )
        look = case.info["appearance"]
        title = f"{look['contrast']}, {look['slice_thickness_mm']:.1f} mm slices (axis {look['slice_axis']})"
        for k in range(3):
            index = tuple(a.shape[k] // 2 if d == k else slice(None) for d, a in enumerate([image] * 3))
            axes[2 * row, k].imshow(image[index].T, origin="lower", cmap="gray")
            axes[2 * row + 1, k].imshow(label[index].T, origin="lower", cmap="tab10", vmin=0, vmax=9)
        axes[2 * row, 0].set_title(title, fontsize=8, loc="left")
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=45)


if __name__ == "__main__":
    main()

"""The real MNI152 T1 as an evaluation image: reference labels by the generator's rule, and the
geometry path of benchmarks/real_brain.py (an LSA 1 x 1 x 3 mm resampling segmented on its own grid)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

pytest.importorskip("nilearn")

import duplus  # noqa: E402
from duplus.config import ModelConfig, PreprocessConfig  # noqa: E402
from duplus.data.phantoms.real_head import (  # noqa: E402
    REFERENCE_TARGETS,
    invert_contrast,
    load_mni152_reference,
    reoriented_grid,
    resample_reference,
)
from duplus.inference.predictor import Predictor  # noqa: E402
from duplus.models.registry import build_model  # noqa: E402

E = 16


@pytest.fixture(scope="module")
def head():
    return load_mni152_reference(4)  # 4 mm: the test's speed; the evaluation uses 2 mm


def test_reference_tissues_are_disjoint_and_fill_the_brain_outline(head) -> None:
    masks = {t: head.target_mask(t) for t in REFERENCE_TARGETS.values()}
    stack = np.stack(list(masks.values()))
    assert stack.sum(axis=0).max() == 1 or not stack.any()
    assert np.array_equal(stack.any(axis=0), head.outline)
    assert all(m.sum() > 100 for m in masks.values())
    # the labels sit on the real T1's own contrast: white brighter than grey brighter than fluid
    means = {t: float(head.image[m].mean()) for t, m in masks.items()}
    assert means["white matter"] > means["grey matter"] > means["cerebrospinal fluid"]
    inverted = invert_contrast(head)
    assert float(inverted.image[masks["white matter"]].mean()) < float(
        inverted.image[masks["grey matter"]].mean()
    )
    assert not inverted.image[~head.outline].any()


def test_lsa_resampling_keeps_the_reference_on_its_grid(head) -> None:
    shape, affine = reoriented_grid(head.affine, head.image.shape, "LSA", (1.0, 1.0, 3.0))
    assert nib.aff2axcodes(affine) == ("L", "S", "A")
    np.testing.assert_allclose(np.linalg.norm(affine[:3, :3], axis=0), [1.0, 1.0, 3.0])
    lsa = resample_reference(head, shape, affine)
    assert lsa.image.shape == lsa.tissue.shape == lsa.outline.shape == shape
    # the same brain: its volume in mm^3 is kept within a voxel layer
    volume = head.outline.sum() * 4.0**3
    assert abs(lsa.outline.sum() * 3.0 - volume) < 0.1 * volume


def test_segmenting_the_lsa_image_returns_masks_on_exactly_its_grid(head) -> None:
    """Through the public ``duplus.segment``, as the evaluation script calls it (untrained network)."""

    class Prompts:
        def get(self, texts, device=None):
            g = torch.Generator().manual_seed(len("".join(texts)))
            return torch.nn.functional.normalize(torch.randn(len(texts), E, generator=g), dim=-1)

    torch.manual_seed(0)
    model = build_model(ModelConfig(preset="tiny"), text_dim=E).eval()
    predictor = Predictor(model, None, PreprocessConfig(spacing=[6.0, 6.0, 6.0]), [32, 32, 32])
    predictor.prompt_cache = Prompts()
    # the central half of the field of view, for speed
    centre = head.affine.copy()
    centre[:3, 3] += head.affine[:3, :3] @ (np.array(head.image.shape) // 4)
    shape, affine = reoriented_grid(centre, np.array(head.image.shape) // 2, "LSA", (1.0, 1.0, 3.0))
    lsa = resample_reference(head, shape, affine)
    assert lsa.outline.any() and nib.aff2axcodes(affine) == ("L", "S", "A")
    targets = list(REFERENCE_TARGETS.values())
    result = duplus.segment(lsa.nifti(), targets, modality="MRI", region="head", predictor=predictor)
    assert list(result.masks) == targets
    for mask in result.masks.values():
        assert mask.shape == shape
        assert np.array_equal(mask.affine, affine)
        assert mask.get_data_dtype() == np.uint8


@pytest.mark.slow
def test_installed_brain_model_keeps_lsa_masks_on_the_grid_and_inside_the_brain() -> None:
    """The issue's acceptance check, run where a ``brain-tissue`` model is installed (``duplus import``):
    an LSA 1 x 1 x 3 mm resampling of the real MNI152 T1 gets masks on exactly its grid, and
    (almost) none of them outside the brain outline, where a full head has scalp and skull."""
    from duplus.bundles.store import list_models
    from duplus.demo.brain import BRAIN_MODEL

    if BRAIN_MODEL not in {m.name for m in list_models()}:
        pytest.skip(f"no {BRAIN_MODEL!r} model installed")
    head = load_mni152_reference(2)
    shape, affine = reoriented_grid(head.affine, head.image.shape, "LSA", (1.0, 1.0, 3.0))
    lsa = resample_reference(head, shape, affine)
    targets = list(REFERENCE_TARGETS.values())
    result = duplus.segment(lsa.nifti(), targets, modality="MRI", region="head", checkpoint=BRAIN_MODEL)
    union = np.zeros(shape, dtype=bool)
    for mask in result.masks.values():
        assert mask.shape == shape and np.array_equal(mask.affine, affine)
        union |= np.asarray(mask.dataobj) > 0
    assert union.sum() > 0.5 * lsa.outline.sum()
    assert (union & ~lsa.outline).sum() <= 0.005 * union.sum()

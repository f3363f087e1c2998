"""The phantom's label maps: the full label map every case carries, and a dataset's partial view of it.

Every case is labelled with :data:`FULL_LABELS`; organs never overlap and a liver tumour is labelled
as tumour. Organ datasets label the whole organ, so :func:`target_mask` reads ``"liver"`` as liver
plus its tumour, and :func:`build_dataset_label` re-expresses a full map in a dataset's own values.
"""

from __future__ import annotations

import numpy as np

from duplus.data.label_space import canonical_target
from duplus.errors import ConfigError

FULL_LABELS: dict[int, str] = {
    1: "liver",
    2: "spleen",
    3: "left kidney",
    4: "right kidney",
    5: "aorta",
    6: "pancreas",
    7: "liver tumour",
    8: "white matter",
    9: "grey matter",
    10: "cerebrospinal fluid",
    11: "primary tumour",
    12: "lymph node",
}
"""The dataset-independent label map of every :class:`PhantomCase` (value -> canonical target)."""
KIND_LABELS = {"abdomen": (1, 2, 3, 4, 5, 6, 7), "head": (8, 9, 10), "headneck": (11, 12)}
"""Full label values each kind of phantom can contain."""
TUMOUR_LABELS = {"abdomen": (7,), "head": (), "headneck": (11, 12)}
"""Full label values of each kind's tumours."""
_INCLUDES = {
    "liver": ("liver tumour",),
    "pancreas": ("pancreas tumour",),
    "kidney": ("left kidney", "right kidney"),
}
"""Targets whose extent includes other labelled targets (organ datasets label the whole organ)."""


def target_mask(label: np.ndarray, label_names: dict[int, str], target: str) -> np.ndarray:
    """Boolean mask of ``target`` in a label map, organs including their tumours.

    ``"liver"`` is liver plus liver tumour (organ datasets label the whole organ); every other
    target is the voxels of its own value(s).

    Args:
        label: ``(I, J, K)`` integer label map.
        label_names: ``{value: name}`` of ``label``; names are canonicalised.
        target: the target name (any synonym).

    Raises:
        ConfigError: neither the target nor a part it includes is named in ``label_names``.
    """
    wanted = canonical_target(target)
    parts = {wanted, *_INCLUDES.get(wanted, ())}
    values = [int(v) for v, n in label_names.items() if canonical_target(n) in parts]
    if not values:
        known = ", ".join(sorted({canonical_target(n) for n in label_names.values()}))
        raise ConfigError(f"target {target!r} is not in this label map ({known})")
    return np.isin(label, values)


def build_dataset_label(
    label: np.ndarray, label_names: dict[int, str], dataset_labels: dict[int, str]
) -> np.ndarray:
    """Re-express a full label map in a dataset's own label values (a partial label map).

    Targets are painted in increasing value order, each with :func:`target_mask`, so a dataset
    ``{1: "liver", 2: "liver tumour"}`` gets the tumour as 2 inside the liver's 1 (the LiTS
    convention), and ``{1: "liver"}`` alone labels the whole liver including its tumour.

    Returns:
        int16 ``(I, J, K)`` map; targets the dataset does not name are background.
    """
    out = np.zeros(label.shape, dtype=np.int16)
    for value in sorted(dataset_labels):
        out[target_mask(label, label_names, dataset_labels[value])] = value
    return out

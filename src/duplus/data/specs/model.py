"""What a dataset is: :class:`DatasetSpec` (modality, region, label map, cases) and :class:`CaseRecord`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from duplus.vocab import t1_prompt

NIFTI_ENDINGS = (".nii.gz", ".nii")


@dataclass
class CaseRecord:
    """One case of a dataset.

    Attributes:
        case_id: unique within the dataset (file stem without ``.nii.gz`` and channel suffix).
        images: the image file(s) of the case, in channel order (one 3D file per channel, or one
            4D file holding all channels, or a DICOM series folder).
        label: the label map (integer values of :attr:`DatasetSpec.labels`), ``None`` for test cases.
        channel_order: for one multi-channel (4D) file whose channels are not in DuPLUS order
            (e.g. CT before PET), the file's channel indices in DuPLUS order; ``None`` = as stored.
    """

    case_id: str
    images: list[Path]
    label: Path | None = None
    channel_order: list[int] | None = None


@dataclass
class DatasetSpec:
    """A dataset: its identity (modality, region, label map) and its cases.

    Attributes:
        name: dataset name (also the cache folder name).
        modality: one of :data:`MODALITIES`.
        region: body region, e.g. ``"abdomen"``; with ``modality`` it makes the T1 prompt.
        labels: ``{label value: canonical target name}``, background excluded.
        root: the dataset folder; relative paths in the spec resolve against it.
        training: labelled cases.
        test: unlabelled cases.
        citation: the reference to cite for this dataset.
        source: the spec file it was read from (for error messages).
    """

    name: str
    modality: str
    region: str
    labels: dict[int, str]
    root: Path
    training: list[CaseRecord] = field(default_factory=list)
    test: list[CaseRecord] = field(default_factory=list)
    citation: str = ""
    source: Path | None = None

    @property
    def targets(self) -> list[str]:
        """Canonical target names in label-value order (a name given to several values once)."""
        return list(dict.fromkeys(self.labels[v] for v in sorted(self.labels)))

    @property
    def t1_prompt(self) -> str:
        """The dataset's T1 prompt, e.g. ``"A CT scan of the abdomen"``."""
        return t1_prompt(self.modality, self.region)

    @property
    def target_values(self) -> dict[str, list[int]]:
        """``{target: label values whose voxels make that target's binary map}``, in target order.

        See :func:`compute_target_values`."""
        return compute_target_values(self.labels)


def compute_target_values(labels: dict[int, str]) -> dict[str, list[int]]:
    """The label values that make each target's binary map.

    Each target is its own value(s); in addition a target ``"<organ> tumour"`` or ``"<organ> cyst"``
    is added to ``<organ>`` when the dataset labels both (a liver tumour is part of the liver).

    Args:
        labels: ``{label value: canonical target name}`` (background excluded).

    Returns:
        ``{target: sorted label values}`` in label-value order of first appearance.
    """
    out: dict[str, list[int]] = {}
    for value in sorted(labels):
        out.setdefault(labels[value], []).append(int(value))
    for target, values in list(out.items()):
        for suffix in (" tumour", " cyst"):
            if target.endswith(suffix):
                organ = target[: -len(suffix)]
                if organ in out:
                    out[organ] = sorted(set(out[organ]) | set(values))
    return out


def case_id_from_path(path: str | Path) -> str:
    """File name without ``.nii.gz``/``.nii`` (or other final suffix)."""
    name = Path(path).name
    for ending in NIFTI_ENDINGS:
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    return Path(name).stem

"""Dataset specs: what a dataset is (modality, region, label map) and where its files are.

A :class:`DatasetSpec` is read from any of the layouts researchers already have:

* an MSD ``dataset.json`` (Medical Segmentation Decathlon: ``modality``, ``labels`` keyed by value,
  ``training``/``test`` file lists; an optional top-level ``region`` is ours and MONAI's
  ``load_decathlon_datalist`` ignores it);
* an nnU-Net v2 ``dataset.json`` (``channel_names``, ``labels`` keyed by name, ``file_ending``;
  cases discovered on disk as ``imagesTr/CASE_0000.nii.gz`` (+ ``_0001`` ...) and
  ``labelsTr/CASE.nii.gz``);
* a plain YAML spec (``name``, ``modality``, ``region``, ``labels``, ``images``, ``labels_dir``);
* a dataset folder holding one of the above (or the HECKTOR 2022 layout, read by
  :func:`duplus.data.specs.hecktor.read_hecktor_spec`).

Modality and region make the T1 prompt (:func:`t1_prompt`); the label map (value -> canonical
target name, :mod:`duplus.data.label_space`) makes the T2 prompts.

Conventions:

* ``CaseRecord.images`` is in channel order. For ``PETCT`` the order is always
  :data:`PETCT_CHANNEL_ORDER` (PET first, then CT); readers reorder files whose channel names say
  otherwise.
* A target named ``"<organ> tumour"`` (or ``"<organ> cyst"``) lies inside ``<organ>`` when both
  are labelled (LiTS, KiTS, MSD pancreas): the organ's binary map includes the tumour's voxels,
  as the organ's anatomical extent does. See :attr:`DatasetSpec.target_values`."""

from __future__ import annotations

from pathlib import Path

from duplus.data.specs.common import _check_json_object
from duplus.data.specs.hecktor import is_hecktor_folder, read_hecktor_spec
from duplus.data.specs.model import CaseRecord, DatasetSpec, case_id_from_path, compute_target_values
from duplus.data.specs.msd import _read_msd
from duplus.data.specs.nnunet import _read_nnunet
from duplus.data.specs.plain import _read_yaml
from duplus.errors import InputError
from duplus.fileio import read_json

__all__ = ["CaseRecord", "DatasetSpec", "case_id_from_path", "compute_target_values", "load_dataset_spec"]


def load_dataset_spec(
    path: str | Path,
    *,
    modality: str | None = None,
    region: str | None = None,
    name: str | None = None,
) -> DatasetSpec:
    """Read a dataset spec from an MSD or nnU-Net v2 ``dataset.json``, a YAML spec, or a folder.

    Explicit ``modality``/``region``/``name`` arguments override the file; a region missing from
    both comes from the registry entry of the dataset name (:mod:`duplus.data.registry`).

    Args:
        path: ``dataset.json``, a ``.yaml``/``.yml`` spec, or a folder holding ``dataset.json``
            (or a HECKTOR 2022 folder).
        modality: override the modality (any spelling :func:`normalise_modality` accepts).
        region: the body region for the T1 prompt.
        name: override the dataset name.

    Raises:
        InputError: naming the spec file: missing fields, empty label names, paths outside the
            dataset folder, missing files, duplicate case ids, unknown modality.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "dataset spec not found")
    if path.is_dir():
        if (path / "dataset.json").is_file():
            path = path / "dataset.json"
        elif is_hecktor_folder(path):
            spec = read_hecktor_spec(path)
            if name:
                spec.name = name
            if region:
                spec.region = region
            return spec
        else:
            yamls = sorted(list(path.glob("dataset.yaml")) + list(path.glob("dataset.yml")))
            if not yamls:
                raise InputError(path, "folder holds no dataset.json, dataset.yaml or HECKTOR 2022 files")
            path = yamls[0]
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return _read_yaml(path, name=name, modality=modality, region=region)
    if suffix != ".json":
        raise InputError(
            path, "unsupported dataset spec; expected dataset.json, a .yaml spec or a dataset folder"
        )
    data = _check_json_object(read_json(path), path)
    if "channel_names" in data or "file_ending" in data:
        return _read_nnunet(path, data, name=name, modality=modality, region=region)
    return _read_msd(path, data, name=name, modality=modality, region=region)

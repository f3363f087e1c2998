"""Synthetic CT / MRI / PET phantoms: the demo's data and the tests' data.

The generator makes both DuPLUS prompts matter:

* **T1 (modality and region)**: the same anatomy is rendered with different intensity physics
  per modality. CT is in Hounsfield units (portal-venous phase: spleen brighter than liver, renal
  parenchyma ~150 HU, enhanced aorta ~200 HU, bone ~700 HU); T1-weighted MRI reverses several
  orderings (liver brighter than spleen and kidneys, fat bright, flowing blood dark, white matter
  brighter than grey matter) and carries a multiplicative bias field and Rician noise; PET is
  SUV-like (background ~1, tumours 5-20), blurred by a 6-8 mm FWHM point-spread function, with
  Poisson-like noise. Appearance varies per case (intensity gain, enhancement, noise level).
* **T2 (targets)**: :func:`make_phantoms` writes several MSD-layout datasets that each label a
  different subset of the organs, with their own label values (partial labels).

Anatomy is built in world millimetres (a patient frame centred on the field of view, RAS axes:
+x is the patient's LEFT, +y anterior, +z superior) and then sampled on the voxel grid of the
case's affine, so RAS, LPS, permuted, oblique and anisotropic grids of one seed show the same
anatomy in world space. Bodies are miniature: the field of view is :data:`FOV_MM` = 96 mm per axis,
which is 64 voxels after resampling to 1.5 mm. Each case has a random pose, size and smooth
low-frequency deformation.

Every case's label is the dataset-independent *full* label map :data:`FULL_LABELS`. Organs never
overlap; a liver tumour is labelled as tumour, and :func:`target_mask` treats "liver" as liver plus
its tumour, as organ datasets label the whole organ. The prognosis cohort (HECKTOR 2022 layout)
follows a known proportional-hazards model of image and EHR features, described in
:mod:`duplus.data.phantoms.cohort`.

Modules, one job each:

* :mod:`.geometry`: rotations, each case's affine, the collection's grid cycle;
* :mod:`.tissues`: the tissue table (label value and base intensity per modality);
* :mod:`.labels`: the full label map and a dataset's partial view of it;
* :mod:`.shapes` and :mod:`.canvas`: shape primitives, the voxel grid and the painted tissue map;
* :mod:`.anatomy`: the bodies, organs and tumours;
* :mod:`.appearance`: each modality's intensity physics, blur, noise and bias field;
* :mod:`.case`: one case (anatomy + geometry + appearance + its facts);
* :mod:`.datasets`: the MSD-layout datasets and ``dataset.json``;
* :mod:`.cohort`: the survival cohort, its hazard and clinical tables;
* :mod:`.collection`: :func:`make_phantoms`, writing it all over a worker pool.

Real anatomy, random appearance (the SynthSeg idea, issue 28): a synthetic head MRI dataset drawn
from the MNI152 tissue maps shipped in nilearn, deformed, with drawn non-brain layers and a random
contrast per case, so a model trained on it does not rely on one contrast:

* :mod:`.contrast`: random appearance of any label map (per-label Gaussian intensities, blur, slice
  thickness, bias field, noise, gamma); ``mri_appearance="random"`` gives it to the phantoms' MRI;
* :mod:`.head_maps`: the MNI152 brain tissues and the non-brain shells (how each label is derived);
* :mod:`.synth_head`: one case (random affine, elastic warp, oriented output grid, appearance);
* :mod:`.synth_dataset`: :func:`make_synth_head`, the MSD-layout dataset.
"""

from duplus.data.phantoms.anatomy import KINDS
from duplus.data.phantoms.appearance import MRI_APPEARANCES, PHANTOM_MODALITIES
from duplus.data.phantoms.case import PhantomCase, make_phantom_case
from duplus.data.phantoms.cohort import COHORT_COEFFICIENTS, COHORT_STANDARDISATION, compute_linear_predictor
from duplus.data.phantoms.collection import make_phantoms
from duplus.data.phantoms.datasets import PHANTOM_DATASETS, PHANTOM_VERSION, PhantomDataset
from duplus.data.phantoms.geometry import AFFINE_STYLES, FOV_MM
from duplus.data.phantoms.head_maps import HEAD_LABELS, HeadMaps, build_head_maps, load_mni152_head_maps
from duplus.data.phantoms.labels import FULL_LABELS, build_dataset_label, target_mask
from duplus.data.phantoms.synth_dataset import SYNTH_HEAD_DATASET, SYNTH_VERSION, make_synth_head
from duplus.data.phantoms.synth_head import make_synth_head_case

__all__ = [
    "AFFINE_STYLES",
    "COHORT_COEFFICIENTS",
    "COHORT_STANDARDISATION",
    "FOV_MM",
    "FULL_LABELS",
    "HEAD_LABELS",
    "HeadMaps",
    "KINDS",
    "MRI_APPEARANCES",
    "PHANTOM_DATASETS",
    "PHANTOM_MODALITIES",
    "PHANTOM_VERSION",
    "PhantomCase",
    "PhantomDataset",
    "SYNTH_HEAD_DATASET",
    "SYNTH_VERSION",
    "build_head_maps",
    "build_dataset_label",
    "compute_linear_predictor",
    "make_phantom_case",
    "load_mni152_head_maps",
    "make_phantoms",
    "make_synth_head",
    "make_synth_head_case",
    "target_mask",
]

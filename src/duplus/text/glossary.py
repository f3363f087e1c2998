"""Plain-language descriptions of anatomical targets, for mapping free text to a target.

A sentence encoder places "the organ that makes bile" far from "liver": the training prompts
name a target, they do not describe it. The free-text mapping (:mod:`duplus.text.matching`)
therefore compares a text also with these descriptions: where the target lies, what it does,
what it is made of, and its adjective ("hepatic", "splenic"). Targets the phantom models are not
trained on have entries too, for the matcher's ``decoys`` (off by default: not chosen on the
validation wordings): with them on, a text nearest to one of those targets names a target the
model does not know, and is left unmatched instead of being pulled to the nearest trained organ.

Written from general anatomy, in English, after the wordings' third test set and by the same
hand: phrases close to a test wording were left out (so "makes urine", "neuronal cell bodies" and
"spinal cord" are not in the kidneys', grey matter's and CSF's entries), and a test checks that no
test wording is in this table. Each entry is a few short phrases; a new target needs none (it is
then matched by its names only).
"""

from __future__ import annotations

from duplus.data.label_space import canonical_target

DESCRIPTIONS: dict[str, tuple[str, ...]] = {
    "liver": (
        "hepatic tissue",
        "the largest solid organ, in the right upper abdomen under the ribs",
        "the organ that makes bile, stores glycogen and filters the blood from the gut",
        "the big organ below the diaphragm on the right side",
    ),
    "spleen": (
        "splenic tissue",
        "the organ in the left upper quadrant, under the left ribs",
        "the lymphoid organ that filters the blood and removes old red blood cells",
        "a fist-sized organ behind the stomach on the left",
    ),
    "left kidney": (
        "left renal tissue",
        "the bean-shaped organ on the left side of the back of the abdomen",
        "the kidney on the patient's left, which filters the blood",
    ),
    "right kidney": (
        "right renal tissue",
        "the bean-shaped organ on the right side of the back of the abdomen",
        "the kidney on the patient's right, below the liver, which filters the blood",
    ),
    "kidney": ("renal tissue", "the bean-shaped organs that filter the blood"),
    "white matter": (
        "myelinated nerve fibre tracts of the brain",
        "the deep tissue of the cerebrum made of myelinated axons",
        "the brain tissue under the cortex that connects its regions",
    ),
    "grey matter": (
        "the cerebral cortex",
        "the outer layer of the brain",
        "the cortex and deep nuclei of the brain",
    ),
    "cerebrospinal fluid": (
        "the fluid in the ventricles and around the brain",
        "the water-like liquid surrounding the brain",
        "the ventricles and subarachnoid spaces of the brain",
    ),
    "liver tumour": ("a mass or cancer in the liver", "a hepatic lesion", "a liver metastasis"),
    "primary tumour": ("the main tumour of the head and neck cancer", "the primary cancer site"),
    "lymph node": ("a lymph node metastasis", "an enlarged node of the lymphatic system"),
    # Targets the phantom models are not trained on: a text nearest to one of these is left unmatched.
    "gallbladder": ("the small sac under the liver that stores and concentrates bile",),
    "pancreas": (
        "the gland behind the stomach that makes insulin and digestive enzymes",
        "the pancreatic head, body and tail",
    ),
    "stomach": ("the hollow organ of the upper abdomen where food is digested", "the gastric wall"),
    "esophagus": ("the muscular tube that carries food from the throat to the stomach", "the gullet"),
    "duodenum": ("the first part of the small intestine, after the stomach",),
    "bladder": ("the hollow organ in the pelvis that stores urine",),
    "aorta": ("the main artery leaving the heart", "the largest artery of the body"),
    "inferior vena cava": ("the large vein that returns blood from the lower body to the heart",),
    "heart": ("the muscular organ in the chest that pumps blood", "the cardiac chambers"),
    "left lung": ("the organ of breathing on the left side of the chest",),
    "right lung": ("the organ of breathing on the right side of the chest",),
    "left adrenal gland": ("the small gland on top of the left kidney",),
    "right adrenal gland": ("the small gland on top of the right kidney",),
    "hippocampus": ("the seahorse-shaped structure of the medial temporal lobe, for memory",),
    "brainstem": ("the part of the brain joining it to the spinal cord",),
    "spinal cord": ("the bundle of nerves running down inside the spine",),
    "mandible": ("the lower jaw bone",),
}
"""``{canonical target: short descriptions}``."""


def descriptions(target: str) -> tuple[str, ...]:
    """The descriptions of ``target`` (any of its names); empty when it has none."""
    return DESCRIPTIONS.get(canonical_target(target), ())


__all__ = ["DESCRIPTIONS", "descriptions"]

"""Segmentation networks: modality stems, T1-conditioned residual U-Net, T2 dynamic head, presets."""

from duplus.models.duplus import DuPLUS, PromptConditioning
from duplus.models.dynamic_head import DynamicHead
from duplus.models.film import ChannelGate, Conditioner, FiLM, NoConditioning, build_conditioner
from duplus.models.registry import (
    ModelPreset,
    build_model,
    count_model_parameters,
    count_parameters,
    get_preset,
    list_presets,
    register_preset,
)
from duplus.models.stems import ModalityStems

__all__ = [
    "ChannelGate",
    "Conditioner",
    "DuPLUS",
    "DynamicHead",
    "FiLM",
    "ModalityStems",
    "ModelPreset",
    "NoConditioning",
    "PromptConditioning",
    "build_conditioner",
    "build_model",
    "count_model_parameters",
    "count_parameters",
    "get_preset",
    "list_presets",
    "register_preset",
]

"""Sliding-window prediction of one volume with per-volume prompt conditioning.

The FiLM parameters and the text side of the head are computed once per volume
(:meth:`DuPLUS.condition`) and passed to every window through MONAI's
``sliding_window_inference`` keyword arguments; only the image path runs per window. For a
``head_position`` model the volume's voxel positions ride along as extra channels, so that every
window gets its own slice of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.inferers import sliding_window_inference

from duplus.models.duplus import DuPLUS, PromptConditioning
from duplus.models.position import volume_positions


def predict_volume_logits(
    model: DuPLUS,
    image: torch.Tensor,
    cond: PromptConditioning,
    roi_size: Sequence[int],
    *,
    overlap: float = 0.25,
    sw_batch_size: int = 2,
    sw_device: torch.device | str | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
    position: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits of one volume.

    Args:
        model: a DuPLUS network in eval mode.
        image: ``(1, C, D, H, W)``: one image at a time, so that a window batch never mixes images.
        cond: conditioning for that image (batch size 1), from ``model.condition``.
        roi_size: window size.
        overlap: window overlap fraction; windows are blended with Gaussian weights.
        sw_batch_size: windows per forward pass.
        sw_device: where windows run (default: the image's device).
        device: where the stitched output lives (e.g. ``"cpu"`` for big volumes on a GPU).
        position: ``(1, 3, D, H, W)`` voxel positions of the volume for a ``head_position`` model
            (default: :func:`duplus.models.position.volume_positions` of ``image``; a flipped copy
            for test-time mirroring). Ignored by other models.

    Returns:
        ``(1, K, D, H, W)`` logits.
    """
    if image.shape[0] != 1:
        raise ValueError("predict_volume_logits takes one image at a time (batch size 1)")
    channels = image.shape[1]
    with_position = bool(getattr(model, "head_position", False))
    if with_position:
        if position is None:
            position = volume_positions(image.shape[2:], image.device, image.dtype)
        image = torch.cat([image, position.to(image)], dim=1)

    def predictor(window: torch.Tensor, cond: PromptConditioning) -> torch.Tensor:
        if with_position:
            return model.forward_conditioned(window[:, :channels], cond, window[:, channels:])
        return model.forward_conditioned(window, cond)

    with torch.no_grad():
        logits = sliding_window_inference(
            image,
            roi_size=tuple(int(r) for r in roi_size),
            sw_batch_size=sw_batch_size,
            predictor=predictor,
            overlap=overlap,
            mode="gaussian",
            sw_device=sw_device,
            device=device,
            progress=progress,
            cond=cond,
        )
    assert isinstance(logits, torch.Tensor)
    return logits

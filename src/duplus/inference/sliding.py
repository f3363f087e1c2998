"""Sliding-window prediction of one volume with per-volume prompt conditioning.

The FiLM parameters and the text side of the head are computed once per volume
(:meth:`DuPLUS.condition`) and passed to every window through MONAI's
``sliding_window_inference`` keyword arguments; only the image path runs per window. For a
``head_position`` model the volume's voxel positions ride along as extra channels, so that every
window gets its own slice of them.

How the windows run (precision, layout, which ones run at all) is a
:class:`~duplus.inference.runtime.RunSettings`; the stitched logits are float32 whatever the
windows computed in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
from monai.inferers import sliding_window_inference

from duplus.inference.runtime import RunSettings
from duplus.models.duplus import DuPLUS, PromptConditioning
from duplus.models.position import volume_positions

AIR_LOGIT = -20.0
"""The logit of every voxel of a window that is not run (no body voxel): sigmoid 2e-9."""


class _WindowRunner:
    """MONAI's predictor callable: casts and lays out each window batch as ``settings`` ask, runs
    the windows that hold a voxel of ``run_mask`` (all without one), and returns float32 logits."""

    def __init__(
        self,
        model: DuPLUS,
        settings: RunSettings,
        channels: int,
        with_position: bool,
        run_mask: torch.Tensor | None,
    ) -> None:
        self.model = model
        self.settings = settings
        self.channels = channels
        self.with_position = with_position
        self.run_mask = run_mask
        self.windows_run = 0
        self.windows_skipped = 0

    def _forward(self, window: torch.Tensor, cond: PromptConditioning) -> torch.Tensor:
        s = self.settings
        if s.cast == "weights":
            window = window.to(s.dtype)
        if s.channels_last:
            window = window.contiguous(memory_format=torch.channels_last_3d)
        ctx = (
            torch.autocast(window.device.type, dtype=s.dtype)
            if s.cast == "autocast"
            else contextlib.nullcontext()
        )
        with ctx:
            if self.with_position:
                out = self.model.forward_conditioned(
                    window[:, : self.channels], cond, window[:, self.channels :]
                )
            else:
                out = self.model.forward_conditioned(window, cond)
        return out.float().contiguous()

    def __call__(self, window: torch.Tensor, coords: Sequence[Any], cond: PromptConditioning) -> torch.Tensor:
        if self.run_mask is None:
            self.windows_run += window.shape[0]
            return self._forward(window, cond)
        keep = [bool(self.run_mask[tuple(c[2:])].any()) for c in coords]
        self.windows_run += sum(keep)
        self.windows_skipped += len(keep) - sum(keep)
        if all(keep):
            return self._forward(window, cond)
        out = torch.full(
            (window.shape[0], cond.num_targets, *window.shape[2:]), AIR_LOGIT, device=window.device
        )
        rows = [i for i, k in enumerate(keep) if k]
        if rows:
            index = torch.tensor(rows, device=window.device)
            out[index] = self._forward(window[index], cond)
        return out


def _pad_like_monai(mask: torch.Tensor, roi_size: Sequence[int]) -> torch.Tensor:
    """``mask`` padded with ``False`` as ``sliding_window_inference`` pads an image smaller than the
    window (centred), so that the window coordinates it reports index the mask too."""
    pads: list[int] = []
    for size, roi in reversed(list(zip(mask.shape, roi_size, strict=True))):
        diff = max(int(roi) - int(size), 0)
        pads += [diff // 2, diff - diff // 2]
    if not any(pads):
        return mask
    return torch.nn.functional.pad(mask[None, None].to(torch.uint8), pads)[0, 0].bool()


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
    settings: RunSettings | None = None,
    run_mask: torch.Tensor | None = None,
    stats: dict[str, int] | None = None,
) -> torch.Tensor:
    """Logits of one volume.

    Args:
        model: a DuPLUS network in eval mode, already converted for ``settings``
            (:func:`~duplus.inference.runtime.prepare_model`).
        image: ``(1, C, D, H, W)`` float32: one image at a time, so that a window batch never mixes
            images.
        cond: conditioning for that image (batch size 1), from ``model.condition`` (float32; it
            is cast here when the windows run in another precision).
        roi_size: window size.
        overlap: window overlap fraction; windows are blended with Gaussian weights.
        sw_batch_size: windows per forward pass.
        sw_device: where windows run (default: the image's device).
        device: where the stitched output lives (e.g. ``"cpu"`` for big volumes on a GPU).
        position: ``(1, 3, D, H, W)`` voxel positions of the volume for a ``head_position`` model
            (default: :func:`duplus.models.position.volume_positions` of ``image``; a flipped copy
            for test-time mirroring). Ignored by other models.
        settings: precision and layout of the windows (default: float32, contiguous).
        run_mask: ``(D, H, W)`` bool; windows without a single ``True`` voxel are not run and get
            :data:`AIR_LOGIT` (``None``: every window runs).
        stats: if given, receives ``windows_run`` and ``windows_skipped``.

    Returns:
        ``(1, K, D, H, W)`` float32 logits.
    """
    if image.shape[0] != 1:
        raise ValueError("predict_volume_logits takes one image at a time (batch size 1)")
    settings = settings or RunSettings(overlap=overlap)
    channels = image.shape[1]
    with_position = bool(getattr(model, "head_position", False))
    if with_position:
        if position is None:
            position = volume_positions(image.shape[2:], image.device, image.dtype)
        image = torch.cat([image, position.to(image)], dim=1)
    if settings.cast == "weights":
        cond = cond.to(cond.head_text.device, dtype=settings.dtype)
    if run_mask is not None:
        run_mask = _pad_like_monai(run_mask, roi_size)
    runner = _WindowRunner(model, settings, channels, with_position, run_mask)
    with torch.no_grad():
        logits = sliding_window_inference(
            image,
            roi_size=tuple(int(r) for r in roi_size),
            sw_batch_size=sw_batch_size,
            predictor=runner,
            overlap=overlap,
            mode="gaussian",
            sw_device=sw_device,
            device=device,
            progress=progress,
            with_coord=True,
            cond=cond,
        )
    assert isinstance(logits, torch.Tensor)
    if stats is not None:
        stats["windows_run"] = stats.get("windows_run", 0) + runner.windows_run
        stats["windows_skipped"] = stats.get("windows_skipped", 0) + runner.windows_skipped
    return logits

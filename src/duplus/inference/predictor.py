"""Prompted inference: ``Predictor.from_checkpoint(path).predict(volume, ...)``.

A volume is preprocessed like the training data (RAS grid at the training spacing, modality
normalisation, foreground crop), predicted with Gaussian-blended sliding windows, and its
probabilities resampled back onto the input's own grid, so outputs keep the input's shape, affine
and orientation exactly. The T1 FiLM parameters and the K head parameter sets are computed once
per volume; more targets cost only the head. How the windows run (the default path, or the fast
one: ``fast=True``) is :mod:`duplus.inference.runtime`; how little of the result is held in
memory is :mod:`duplus.inference.prediction`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from duplus.checkpoint import load_checkpoint
from duplus.config import ModelConfig, PreprocessConfig, TextConfig, from_dict
from duplus.data.io import Volume
from duplus.data.label_space import LabelSpace, canonical_target, is_known_target, nearest_known_target
from duplus.errors import CheckpointError, ConfigError, DuplusError, InputError
from duplus.inference.prediction import Prediction, masks_on_input_grid
from duplus.inference.runtime import RunSettings, prepare_model, resolve_run_settings
from duplus.vocab import IN_CHANNELS, MODALITY_CHANNELS, modality_index, normalise_modality, t1_prompt

logger = logging.getLogger(__name__)

MAX_PROMPT_CHARS = 1000


def clean_targets(targets: Sequence[str], *, exact_prompts: bool = False) -> list[str]:
    """Clean target prompts: collapse whitespace; refuse empty, over-long and duplicate ones.

    Duplicates are judged by canonical target name ("liver" and "Liver" are the same target),
    or by the exact text when ``exact_prompts`` (paraphrases of one target are then allowed).

    Raises:
        InputError: naming ``--targets`` and the problem.
    """
    if isinstance(targets, str) or not targets:
        raise InputError("--targets", "no target given" if not targets else "expected a list of target names")
    key = (lambda x: x.lower()) if exact_prompts else canonical_target
    cleaned: list[str] = []
    for t in targets:
        text = " ".join(str(t).split())
        if not text:
            raise InputError("--targets", "empty or whitespace-only target prompt")
        if len(text) > MAX_PROMPT_CHARS:
            raise InputError(
                "--targets", f"target prompt of {len(text)} characters; at most {MAX_PROMPT_CHARS}"
            )
        if key(text) in [key(c) for c in cleaned]:
            raise InputError("--targets", f"duplicate target {text!r}")
        cleaned.append(text)
    return cleaned


def warn_unfamiliar_targets(targets: Sequence[str], label_space: LabelSpace | None) -> None:
    """Log once per target that the model was not trained on: free text (with the nearest known
    name) or a known target outside this model's label space. Targets it was trained on are silent."""
    for text in targets:
        if label_space is not None and text in label_space:
            continue
        if not is_known_target(text):
            near, score = nearest_known_target(text)
            logger.warning(
                "target %r is not a known target name; the text encoder reads it as free text (nearest known: %r, %.2f)",
                text,
                near,
                score,
            )
        elif label_space is not None:
            logger.warning(
                "target %r was not among this model's training targets %s", text, label_space.targets
            )


def _first_detail(exc: BaseException, limit: int = 200) -> str:
    """The informative line of an exception (``load_state_dict`` puts a heading first)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
    line = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else lines[0]
    return line[:limit]


def load_model_parts(path: str | Path, *, allow_download: bool = False) -> tuple[dict[str, Any], Any, Any]:
    """The checkpoint, its network (weights loaded, not adapted) and its text encoder.

    Raises:
        CheckpointError: not a DuPLUS checkpoint, weights that do not fit the model it describes,
            NaN weights, an absurd model description, or a hub text encoder not available offline
            (unless ``allow_download``).
    """
    from duplus.models.registry import build_model
    from duplus.text.encoder import TextEncoder

    ckpt = load_checkpoint(path)
    try:
        model_cfg = from_dict(ModelConfig, ckpt["model_config"])
        text_cfg = from_dict(TextConfig, ckpt["text_config"])
        from_dict(PreprocessConfig, ckpt["preprocess"])
        model = build_model(model_cfg, text_dim=int(ckpt["text_dim"]))
        missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    except KeyError as exc:
        raise CheckpointError(path, f"incomplete DuPLUS checkpoint: no entry {exc}") from exc
    except (ConfigError, RuntimeError, TypeError, ValueError) as exc:
        preset = (ckpt.get("model_config") or {}).get("preset")
        raise CheckpointError(
            path, f"weights do not fit the model it describes (preset {preset!r}): {_first_detail(exc)}"
        ) from exc
    if missing or unexpected:
        raise CheckpointError(
            path,
            f"weights do not match preset {model_cfg.preset!r}: {len(missing)} missing, {len(unexpected)} unexpected",
        )
    try:
        encoder = TextEncoder(
            text_cfg.encoder,
            pooling=text_cfg.pooling,
            max_length=text_cfg.max_length,
            allow_download=allow_download,
        )
    except DuplusError as exc:
        raise CheckpointError(path, f"its text encoder {text_cfg.encoder!r} cannot be loaded: {exc}") from exc
    if encoder.model_id != ckpt["text_encoder_id"]:
        logger.warning(
            "checkpoint was trained with text encoder %s, loaded %s",
            ckpt["text_encoder_id"],
            encoder.model_id,
        )
    if int(ckpt["text_dim"]) != encoder.embed_dim:
        raise CheckpointError(
            path, f"text_dim {ckpt['text_dim']} does not match its text encoder's {encoder.embed_dim}"
        )
    return ckpt, model, encoder


class Predictor:
    """Segment volumes for text-named targets with a trained DuPLUS checkpoint.

    Args:
        model: the network (eval mode).
        text_encoder: the text encoder the model was trained with.
        preprocess: the training preprocessing config.
        patch_size: sliding-window size.
        label_space: targets seen in training (for warnings).
        device: where the network runs.
        mirror_axes: axes the model was trained to mirror (the train config's ``mirror_axes``):
            the only copies test-time augmentation may average over.
        source: where the model came from (named in errors), e.g. the checkpoint path.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        text_encoder: Any,
        preprocess: PreprocessConfig,
        patch_size: list[int],
        label_space: LabelSpace | None = None,
        device: torch.device | str = "cpu",
        mirror_axes: Sequence[str] = (),
        source: str | Path | None = None,
    ) -> None:
        from duplus.text.cache import EmbeddingCache

        self.device = torch.device(device)
        self.model: Any = model.to(self.device).eval()
        self.text_encoder = text_encoder
        self.prompt_cache: Any = EmbeddingCache(text_encoder)  # or an adapted model's PromptRouter
        self.preprocess = preprocess
        self.patch_size = list(patch_size)
        self.label_space = label_space
        self.mirror_axes = tuple(mirror_axes)
        self.source = source
        self._run_models: dict[tuple[Any, ...], Any] = {}

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, *, device: str = "auto", allow_download: bool = False
    ) -> Predictor:
        """Rebuild model, text encoder and preprocessing from a checkpoint alone.

        A merged adaptation or an adapter file needs the adaptation code: load those with
        :func:`duplus.load_predictor`.

        Args:
            path: a DuPLUS checkpoint.
            device: ``auto``, ``cpu``, ``cuda[:N]`` or ``mps``.
            allow_download: let a checkpoint that names a Hugging Face hub text encoder fetch it;
                by default only a local folder or the local cache is read.
        """
        ckpt, model, encoder = load_model_parts(path, allow_download=allow_download)
        if ckpt.get("prompt_overrides"):
            raise CheckpointError(path, "is a merged adaptation; load it with duplus.load_predictor")
        return cls.from_parts(ckpt, model, encoder, source=path, device=device)

    @classmethod
    def from_parts(
        cls,
        ckpt: dict[str, Any],
        model: torch.nn.Module,
        prompts: Any,
        *,
        source: str | Path,
        device: str = "auto",
    ) -> Predictor:
        """A predictor for ``model`` with the checkpoint's preprocessing and patch size.

        Args:
            ckpt: the loaded checkpoint.
            model: the network (a base DuPLUS or an adapted one).
            prompts: the text encoder, or an adaptation's prompt router (anything with
                ``get(texts) -> (N, E)`` and ``added_targets`` for a router).
            source: where the model came from, named in errors.
            device: where the network runs.
        """
        from duplus.device import select_device
        from duplus.text.encoder import TextEncoder

        encoder = prompts if isinstance(prompts, TextEncoder) else prompts.encoder
        predictor = cls(
            model,
            encoder,
            from_dict(PreprocessConfig, ckpt["preprocess"]),
            ckpt["patch_size"],
            LabelSpace.from_dict(ckpt.get("label_space", {})),
            device=select_device(device),
            mirror_axes=(ckpt.get("train_config") or {}).get("mirror_axes") or (),
            source=source,
        )
        if not isinstance(prompts, TextEncoder):  # adapted prompts first, the frozen cache for the rest
            predictor.prompt_cache = prompts
            if predictor.label_space is not None:
                predictor.label_space.extend(prompts.added_targets)
        return predictor

    # ------------------------------------------------------------------ prompts
    def match_targets(self, targets: list[str], modality: str, *, exact_prompts: bool = False) -> list[Any]:
        """Resolve each target text to a trained target (:class:`~duplus.text.matching.TargetMatcher`).

        With ``exact_prompts``, or a model that records no trained targets, every text is used as
        written (and unfamiliar ones are warned about). An unmatched text is warned about here;
        :meth:`predict` leaves its mask empty.
        """
        from duplus.text.cache import EmbeddingCache
        from duplus.text.matching import TargetMatch, TargetMatcher

        if exact_prompts or not self.label_space:
            warn_unfamiliar_targets(targets, self.label_space)
            return [TargetMatch(t, None, "as written") for t in targets]
        key = tuple(self.label_space.targets)
        if getattr(self, "_matcher_key", None) != key:  # the label space grows when an adapter loads
            frozen = self.prompt_cache if isinstance(self.prompt_cache, EmbeddingCache) else None
            embed = (frozen or EmbeddingCache(self.text_encoder)).get
            self._matcher, self._matcher_key = TargetMatcher(key, embed), key
        matches = self._matcher.match(targets, modality)
        for m in matches:
            if m.how == "unmatched":
                near = f"; nearest trained target {m.nearest!r}" if m.nearest else ""
                logger.warning(
                    "target %r names nothing this model was trained on (%s%s); its mask is left empty."
                    " Use exact prompts (--exact-prompts) to send the text as written",
                    m.text,
                    m.reason,
                    near,
                )
            elif m.how in ("abbreviation", "spelling", "meaning"):
                logger.warning(
                    "target %r read as the trained target %r (%s similarity %.2f); use exact prompts"
                    " (--exact-prompts) to send the text as written",
                    m.text,
                    m.target,
                    m.how,
                    m.similarity,
                )
        return matches

    def encode_prompts(
        self,
        modality: str,
        region: str,
        targets: list[str],
        *,
        exact_prompts: bool = False,
        t1_text: str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """T1 ``(1, E)`` and T2 ``(1, K, E)`` embeddings and the prompt texts used.

        A known target name is prompted by its canonical name (as in training) unless
        ``exact_prompts``; other texts are passed to the text encoder as written. ``t1_text``
        replaces the T1 prompt made from modality and region. A single-prompt model reads each
        target as one sentence with the T1 context, as it was trained.
        """
        from duplus.text.prompts import single_prompt_text, t2_prompts

        region_text = " ".join(str(region).split())
        if not region_text:
            raise InputError("--region", "empty region")
        t1_text = t1_prompt(modality, region_text) if t1_text is None else t1_text
        t2_texts = [
            t2_prompts(canonical_target(t), modality)[0] if is_known_target(t) and not exact_prompts else t
            for t in targets
        ]
        if getattr(self.model, "single_prompt", False):
            t2_texts = [single_prompt_text(t1_text, x) for x in t2_texts]
        t1 = self.prompt_cache.get([t1_text]).to(self.device)
        t2 = self.prompt_cache.get(t2_texts)[None].to(self.device)
        return t1, t2, {"t1": t1_text, "t2": dict(zip(targets, t2_texts, strict=True))}

    # ------------------------------------------------------------------ predict
    def predict(
        self,
        volume: Volume,
        modality: str,
        region: str,
        targets: list[str],
        *,
        overlap: float | None = None,
        sw_batch_size: int = 2,
        tta: bool = False,
        threshold: float = 0.5,
        t1_override: str | None = None,
        exact_prompts: bool = False,
        fast: bool = False,
        precision: str = "auto",
        probabilities: bool = False,
    ) -> Prediction:
        """Segment one volume.

        (Long only by its signature and this docstring: one argument per ``duplus segment`` option.)

        Args:
            volume: input image, ``(C, I, J, K)`` with its affine (PET/CT: PET first, then CT).
            modality: CT, MRI, PET or PETCT (chooses the stem and the T1 prompt).
            region: body region for the T1 prompt, e.g. "abdomen".
            targets: target names (free text).
            overlap: sliding-window overlap (``None``: 0.5, or 0.25 with ``fast``).
            sw_batch_size: windows per forward pass.
            tta: average over the copies mirrored along every combination of the axes the model
                was trained to mirror (:attr:`mirror_axes`; never left-right, which would swap
                left and right organs).
            threshold: probability threshold of the masks.
            t1_override: a T1 prompt text used instead of the one made from modality and region
                (for prompt-control experiments).
            exact_prompts: use the target texts exactly as written. By default each text is
                resolved to a trained target (:meth:`match_targets`): a synonym, a misspelling or
                a close paraphrase is prompted by the trained name, and a text that names nothing
                the model was trained on gets a warning and an empty mask.
            fast: the fast path (:mod:`duplus.inference.runtime`): native bfloat16 where the
                device has it, channels-last, overlap 0.25, air windows skipped.
            precision: ``auto``, ``fp32``, ``bf16`` or ``fp16`` (``auto``: float32 on the CPU,
                bfloat16 with ``fast`` on a CPU that has it natively; bfloat16 autocast on CUDA).
            probabilities: also keep the float32 ``(K, I, J, K)`` probability stack
                (:attr:`Prediction.probabilities`); without it the masks are made one target at a
                time (the same masks) and only float16 maps on the model's grid are kept.

        Returns:
            :class:`Prediction` on the input grid.

        Raises:
            InputError: ``tta`` with a model trained without mirroring: mirrored copies would be
                out of its distribution; an unknown or unavailable ``precision``.
        """
        from duplus.data.preprocess import preprocess_case

        modality = normalise_modality(modality, source="--modality")
        settings = resolve_run_settings(self.device, fast=fast, overlap=overlap, precision=precision)
        flips: list[tuple[int, ...]] = self._tta_flips() if tta else [()]
        targets = clean_targets(targets, exact_prompts=exact_prompts)
        region_text = _check_input(volume, modality, region)
        matches = self.match_targets(targets, modality, exact_prompts=exact_prompts)
        prompts: dict[str, Any] = {
            "t1": t1_override or t1_prompt(modality, region_text),
            "t2": dict.fromkeys(targets),
        }
        pre = preprocess_case(volume, None, modality, self.preprocess)
        run: dict[str, Any] = {**settings.describe(), "grid": list(pre.image.shape[1:])}
        # an unmatched text is never prompted: its map stays 0 (an empty mask)
        prob_np = np.zeros((len(targets), *pre.image.shape[1:]), dtype=np.float32)
        active = [k for k, m in enumerate(matches) if m.how != "unmatched"]
        if active:
            asked = [matches[k].target or targets[k] for k in active]
            exact = exact_prompts or all(matches[k].target is None for k in active)
            t1, t2, used = self.encode_prompts(
                modality, region, asked, exact_prompts=exact, t1_text=t1_override
            )
            prompts["t2"].update({targets[k]: used["t2"][a] for k, a in zip(active, asked, strict=True)})
            with torch.no_grad():
                cond = self.model.condition(
                    torch.tensor([modality_index(modality)], device=self.device), t1, t2
                )
                body = pre.body if settings.skip_air else None
                prob_np[active] = self._probabilities(
                    pre.image,
                    cond,
                    flips,
                    settings=settings,
                    sw_batch_size=sw_batch_size,
                    body=body,
                    stats=run,
                ).numpy()
        prompts["targets"] = {m.text: m.to_dict() for m in matches}
        masks, prob_in = _on_input_grid(prob_np, pre.affine, volume, threshold, keep_stack=probabilities)
        prob16 = prob_np.astype(np.float16)
        del prob_np
        return Prediction(
            masks=masks,
            targets=targets,
            affine=volume.affine,
            prompts=prompts,
            probabilities=prob_in,
            model_probabilities=prob16,
            model_affine=pre.affine,
            run=run,
        )

    def model_for(self, settings: RunSettings) -> Any:
        """The network converted for ``settings`` (bfloat16 weights, channels-last), built once."""
        key = (id(self.model), settings.cast, settings.precision, settings.channels_last)
        if key not in self._run_models:
            self._run_models = {key: prepare_model(self.model, settings)}  # one converted copy at most
        return self._run_models[key]

    def _probabilities(
        self,
        image: np.ndarray,
        cond: Any,
        flips: list[tuple[int, ...]],
        *,
        settings: RunSettings,
        sw_batch_size: int,
        body: np.ndarray | None = None,
        stats: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        """``(K, D, H, W)`` float32 sigmoid probabilities of a preprocessed ``image (C, D, H, W)``
        on its own grid, averaged over the mirrored copies ``flips`` (``[()]``: the image as is).
        Windows without a voxel of ``body`` (``(D, H, W)`` bool) are not run."""
        from duplus.inference.sliding import predict_volume_logits
        from duplus.models.position import volume_positions

        padded = np.zeros((IN_CHANNELS, *image.shape[1:]), dtype=np.float32)
        padded[: image.shape[0]] = image
        x = torch.from_numpy(padded)[None].to(self.device)
        del padded
        # a mirrored copy keeps each voxel's true position (positions flip with the image)
        position = (
            volume_positions(x.shape[2:], self.device)
            if getattr(self.model, "head_position", False)
            else None
        )
        mask = torch.from_numpy(np.ascontiguousarray(body)).to(self.device) if body is not None else None
        model = self.model_for(settings)
        prob: torch.Tensor | None = None
        for dims in flips:
            logits = predict_volume_logits(
                model,
                torch.flip(x, dims) if dims else x,
                cond,
                self.patch_size,
                overlap=settings.overlap,
                sw_batch_size=sw_batch_size,
                device="cpu",
                position=torch.flip(position, dims) if dims and position is not None else position,
                settings=settings,
                run_mask=(torch.flip(mask, [d - 2 for d in dims]) if dims else mask)
                if mask is not None
                else None,
                stats=stats,
            )[0]
            p = logits.sigmoid_()  # in place: one (K, D, H, W) float32 tensor per copy at most
            p = torch.flip(p, [d - 1 for d in dims]) if dims else p
            prob = p if prob is None else prob.add_(p)
            del logits, p
        assert prob is not None
        return prob.div_(len(flips)) if len(flips) > 1 else prob

    def _tta_flips(self) -> list[tuple[int, ...]]:
        """The flipped dims of the ``(1, C, D, H, W)`` input for each TTA copy (``()``: as is)."""
        from itertools import combinations

        from duplus.data.sampling import MIRROR_AXES

        if not self.mirror_axes:
            raise InputError(
                self.source if self.source is not None else "--tta",
                "--tta needs a model trained with mirroring (train config mirror_axes, e.g. [ap, si]);"
                " this one was not, and mirrored copies would be out of its distribution",
            )
        dims = [2 + MIRROR_AXES[a] for a in self.mirror_axes]
        return [c for n in range(len(dims) + 1) for c in combinations(dims, n)]


def _check_input(volume: Volume, modality: str, region: str) -> str:
    """The region text, cleaned; refuses a channel count the modality's stem cannot take."""
    n_ch = MODALITY_CHANNELS[modality]
    if volume.num_channels != n_ch:
        raise InputError(
            volume.path, f"{modality} needs {n_ch} channel(s), the image has {volume.num_channels}"
        )
    region_text = " ".join(str(region).split())
    if not region_text:
        raise InputError("--region", "empty region")
    return region_text


def _on_input_grid(
    prob: np.ndarray, model_affine: np.ndarray, volume: Volume, threshold: float, *, keep_stack: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Masks on the input grid and, with ``keep_stack``, the float32 probability stack there too.

    Without the stack the masks are made one target at a time (the same masks, less memory).
    """
    from duplus.data.resample import resample_to_grid

    if not keep_stack:
        return masks_on_input_grid(prob, model_affine, volume.spatial_shape, volume.affine, threshold), None
    prob_in = resample_to_grid(
        prob, model_affine, volume.spatial_shape, volume.affine, mode="linear", padding_value=0.0
    )
    return (prob_in >= threshold).astype(np.uint8), prob_in

"""The ``duplus`` sub-commands: each unpacks its parsed arguments, calls one library function and
prints what the user needs to see.

Heavy libraries (torch, MONAI, transformers) are imported inside the functions, so ``duplus
--help`` is instant.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger("duplus")


def dataset_cases(text: str) -> tuple[str, int, int | None]:
    """``TASK=TRAIN[,TEST]`` -> ``(TASK, TRAIN, TEST or None)``."""
    name, sep, counts = text.partition("=")
    parts = counts.split(",")
    if not sep or not name or len(parts) > 2 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(
            f"expected TASK=TRAIN[,TEST], e.g. Task02_PhantomPancreasCT=96,24; got {text!r}"
        )
    return name, int(parts[0]), int(parts[1]) if len(parts) == 2 else None


def cmd_make_phantoms(args: argparse.Namespace) -> int:
    from duplus.data.phantoms import make_phantoms

    if args.anatomy == "mni152":
        return _make_synth_head(args)
    if args.spacing is not None:
        from duplus.errors import ConfigError

        raise ConfigError("--spacing applies to --anatomy mni152 only (the phantoms' grid is --shape)")
    out = make_phantoms(
        Path(args.out),
        cases=args.cases,
        seed=args.seed,
        test_seed=args.test_seed,
        test_cases=args.test_cases,
        dataset_cases={
            name: (train, args.test_cases if test is None else test)
            for name, train, test in args.dataset_cases or []
        },
        shape=args.shape,
        cohort_cases=args.cohort,
        workers=args.workers,
        progress=not args.quiet,
        overwrite=args.overwrite,
        mri_appearance=args.mri_appearance,
    )
    for name, path in out.items():
        print(f"{name}: {path}")
    return 0


def _make_synth_head(args: argparse.Namespace) -> int:
    """``make-phantoms --anatomy mni152``: the synthetic head MRI dataset."""
    from duplus.data.phantoms import make_synth_head
    from duplus.errors import ConfigError

    if args.cohort or args.dataset_cases or args.mri_appearance != "fixed":
        raise ConfigError("--cohort, --dataset-cases and --mri-appearance apply to --anatomy phantoms only")
    path = make_synth_head(
        Path(args.out),
        cases=args.cases,
        seed=args.seed,
        test_seed=args.test_seed,
        test_cases=args.test_cases,
        spacing=2.0 if args.spacing is None else args.spacing,
        workers=args.workers,
        progress=not args.quiet,
        overwrite=args.overwrite,
    )
    print(f"{path.name}: {path}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from duplus.config import PreprocessConfig, load_config
    from duplus.data.prepared import prepare_dataset
    from duplus.data.specs import load_dataset_spec

    cfg = load_config(PreprocessConfig, args.config) if args.config else PreprocessConfig()
    if args.spacing:
        cfg.spacing = [float(s) for s in args.spacing]
    cache = Path(args.out)
    for spec_path in args.datasets:
        spec = load_dataset_spec(Path(spec_path), modality=args.modality, region=args.region)
        path = prepare_dataset(spec, cache, cfg, progress=not args.quiet, include_test=args.include_test)
        print(f"{spec.name}: {len(spec.training)} training cases prepared in {path}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from duplus.training.api import train

    metrics = train(
        config=args.config,
        out=args.out,
        resume=args.resume,
        overrides=args.set or [],
        progress=not args.quiet,
    )
    if metrics:
        mean = metrics.get("dice/mean")
        parts = [f"mean validation Dice {mean:.4f}"] if mean is not None else []
        parts += [f"{k} {metrics[f'dice/{k}']:.4f}" for k in ("organs", "lesions") if f"dice/{k}" in metrics]
        print("training finished" + ("; " + ", ".join(parts) if parts else ""))
    return 0


def cmd_segment(args: argparse.Namespace) -> int:
    from duplus.api.segmentation import segment_files

    written = segment_files(
        args.input,
        args.output,
        args.targets,
        modality=args.modality,
        region=args.region,
        checkpoint=args.checkpoint,
        adapter=args.adapter,
        ml=args.ml,
        save_probabilities=args.save_probabilities,
        overwrite=args.overwrite,
        device=args.device,
        overlap=args.overlap,
        sw_batch_size=args.sw_batch_size,
        tta=args.tta,
        threshold=args.threshold,
        allow_download=args.allow_download,
        progress=not args.quiet,
        fast=args.fast,
        precision=args.precision,
        series_uid=args.series_uid,
        allow_uneven=args.allow_uneven,
        output_type=args.output_type,
        statistics=args.statistics,
        preview=args.preview,
        exact_prompts=args.exact_prompts,
    )
    print(f"{len(written)} output(s) written to {args.output}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from duplus.metrics.api import evaluate, summary_markdown

    df = evaluate(
        args.pred,
        args.ref,
        out=args.out,
        labels=args.labels,
        nsd_tolerance_mm=args.nsd_tolerance,
        overwrite=args.overwrite,
    )
    print(summary_markdown(df))
    print(f"per-case metrics: {Path(args.out) / 'metrics.csv'}")
    return 0


def cmd_adapt(args: argparse.Namespace) -> int:
    from duplus.adapt.api import adapt_checkpoint
    from duplus.adapt.report import summary_lines
    from duplus.bundles.store import resolve_checkpoint

    report = adapt_checkpoint(
        resolve_checkpoint(args.checkpoint), args.config, args.out, merge=args.merge, progress=not args.quiet
    )
    for line in summary_lines(report):
        print(line)
    return 0


def cmd_prognosis(args: argparse.Namespace) -> int:
    from duplus.bundles.store import resolve_checkpoint
    from duplus.prognosis.api import PrognosisRequest, run_prognosis_command

    req = PrognosisRequest(
        action=args.prognosis_command,
        out=args.out,
        hecktor=args.hecktor,
        clinical=args.clinical,
        id_col=args.id_col,
        time_col=args.time_col,
        event_col=args.event_col,
        images=args.images,
        checkpoint=str(resolve_checkpoint(args.checkpoint)) if args.checkpoint else None,
        mode=args.mode,
        modes=tuple(args.modes) if getattr(args, "modes", None) else None,
        config=args.config,
        folds=getattr(args, "folds", None),
        repeats=getattr(args, "repeats", None),
        model=getattr(args, "model", None),
        preset=args.preset,
        masks=args.masks,
    )
    print(run_prognosis_command(req))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from duplus.bundles.export import export_bundle
    from duplus.bundles.store import resolve_checkpoint

    path = export_bundle(resolve_checkpoint(args.checkpoint), args.output, dtype=args.dtype, name=args.name)
    print(f"bundle written to {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from duplus.bundles.store import import_bundle

    model = import_bundle(args.bundle, name=args.name, overwrite=args.overwrite)
    print(
        f"installed {model.card.get('kind', 'model')} {model.name!r} in {model.path.parent}; use it with -c {model.name}"
    )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from duplus.bundles.store import list_models, models_dir

    models = list_models()
    if not models:
        print(f"no models installed in {models_dir()} (duplus import BUNDLE installs one)")
    for m in models:
        card = m.card
        where = "packaged" if m.packaged else "installed"
        if card.get("kind") == "damaged":
            print(f"{m.name}\t{where}\tdamaged: {card.get('error')}")
            continue
        dice = (card.get("validation") or {}).get("dice/mean")
        what = (
            f"preset {card.get('preset')}"
            if card.get("kind") == "model"
            else f"adapter for {str((card.get('base') or {}).get('sha256'))[:12]}"
        )
        print(
            f"{m.name}\t{where}\t{what}\ttargets: {', '.join(card.get('targets', [])) or '-'}"
            + (f"\tvalidation Dice {dice:.3f}" if isinstance(dice, int | float) else "")
        )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from duplus.demo import run_demo

    report = run_demo(
        Path(args.out), quick=args.quick, seed=args.seed, progress=not args.quiet, iterations=args.iterations
    )
    print(f"report written to {report}")
    return 0

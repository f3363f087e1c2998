"""Anatomy: the bodies (abdomen, brain, neck) and their organs and tumours, painted as a tissue map.

Everything here draws from the case's anatomy stream only, so the patient does not depend on the
grid or the modality it is rendered with. Axes are the patient frame's (RAS: +x the patient's left,
+y anterior, +z superior), in mm, for the :data:`.geometry.FOV_MM` field of view.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from duplus.data.phantoms.canvas import Canvas, Grid
from duplus.data.phantoms.shapes import Blob, Waves, organ, tube
from duplus.data.phantoms.tissues import TISSUE_ID

KINDS = ("abdomen", "head", "headneck")
_DEFORMATION_AMPLITUDE_MM = {"abdomen": (0.8, 2.0), "head": (0.4, 1.2), "headneck": (0.6, 1.6)}


def build_anatomy(
    kind: str,
    shape: tuple[int, int, int],
    local_affine: np.ndarray,
    rng: np.random.Generator,
    with_tumour: bool | None,
) -> tuple[Canvas, dict[str, Any]]:
    """Deform the grid smoothly and paint a body of ``kind`` on it.

    Args:
        kind: one of :data:`KINDS`.
        shape: grid size ``(I, J, K)``.
        local_affine: ``(4, 4)`` voxel -> patient-frame affine.
        rng: the case's anatomy stream.
        with_tumour: see :func:`.case.make_phantom_case`.

    Returns:
        The painted canvas and the anatomy's facts (``has_tumour``; head-and-neck adds its tumour
        sizes and uptakes).
    """
    amp = _DEFORMATION_AMPLITUDE_MM[kind]
    deformation = [Waves.draw(rng, 3, (50.0, 130.0), amp) for _ in range(3)]
    canvas = Canvas(Grid(shape, local_affine, deformation))
    return canvas, _BUILDERS[kind](canvas, rng, with_tumour)


def _paint_spine(canvas: Canvas, rng: np.random.Generator, y_body: float, over: Sequence[str]) -> None:
    body = tube(rng, 0.0, y_body, (6.5, 6.0), jitter=0.7)
    canvas.paint(body, "bone", over)
    period, thick, z0 = rng.uniform(20.0, 25.0), rng.uniform(3.0, 4.5), rng.uniform(0.0, 25.0)
    canvas.paint(body, "disc", ("bone",), where=lambda q: np.mod(q[2] - z0, period) < thick)
    arch = Blob(body.center + np.array([0.0, -9.0, 0.0]), np.array([5.0, 5.0, np.inf]), body.rotation)
    canvas.paint(arch, "bone", (*over, "fat", "muscle"))
    canvas.paint(arch.shrunk(2.5), "spinal canal", ("bone",))


def _build_abdomen(canvas: Canvas, rng: np.random.Generator, with_tumour: bool | None) -> dict[str, Any]:
    s = rng.uniform(0.94, 1.04)
    torso = Blob(
        np.array([rng.normal(0, 1.5), rng.normal(0, 1.5), 0.0]),
        np.array([42.0 * s * rng.uniform(0.97, 1.03), 34.0 * s * rng.uniform(0.97, 1.03), np.inf]),
        bumps=rng.normal(0.0, 0.02, 8),
    )
    t_fat, t_muscle = rng.uniform(2.5, 5.0), rng.uniform(2.5, 4.0)
    canvas.paint(torso, "fat", ("air",))
    canvas.paint(torso.shrunk(t_fat), "muscle", ("fat",))
    canvas.paint(torso.shrunk(t_fat + t_muscle), "visceral fat", ("muscle",))
    cavity = ("visceral fat",)
    _paint_spine(canvas, rng, -17.0, (*cavity, "muscle", "fat"))
    for side in (-1.0, 1.0):
        canvas.paint(
            organ(rng, (10.0 * side, -27.0, 0.0), (6.0, 5.0, np.inf), tilt=0), "muscle", ("fat", *cavity)
        )
    canvas.paint(tube(rng, 3.0, -5.0, (4.5, 4.5)), "aorta", cavity)
    canvas.paint(tube(rng, -7.0, -4.0, (3.8, 3.2)), "inferior vena cava", cavity)
    canvas.paint(organ(rng, (-17.0, -15.0, -6.0), (6.0, 8.0, 11.5), -20.0), "right kidney", cavity)
    canvas.paint(organ(rng, (17.0, -15.0, -2.0), (6.0, 8.0, 11.5), 20.0), "left kidney", cavity)
    canvas.paint(organ(rng, (24.0, -7.0, 10.0), (7.0, 12.0, 12.5), 35.0), "spleen", cavity)
    canvas.paint(organ(rng, (7.0, 1.0, -2.0), (14.0, 4.0, 4.5), -15.0, bumps=0.08), "pancreas", cavity)
    stomach = organ(rng, (13.0, 13.0, 13.0), (10.0, 7.0, 9.0), 20.0)
    canvas.paint(stomach, "stomach", cavity)
    gas_level = float(stomach.center[1] + rng.uniform(0.2, 0.5) * stomach.semi[1])
    canvas.paint(stomach.shrunk(2.5), "stomach content", ("stomach",))
    canvas.paint(stomach.shrunk(2.5), "gas", ("stomach content",), where=lambda q: q[1] > gas_level)
    liver = organ(rng, (-14.0, 5.0, 8.0), (20.0, 18.0, 20.0), 10.0, taper=0.45)
    canvas.paint(liver, "liver", cavity)
    # tumour: always drawn (so the random stream does not depend on with_tumour), painted if wanted
    u = np.array([rng.uniform(-0.6, 0.05), rng.uniform(-0.4, 0.4), rng.uniform(-0.4, 0.4)])
    radius = rng.uniform(3.0, 8.0)
    tumour = organ(
        rng, liver.center + liver.rotation @ (u * liver.semi), (radius,) * 3, jitter=0.0, size=0.15
    )
    has_tumour = bool(rng.random() < 0.4) if with_tumour is None else bool(with_tumour)
    canvas.uptake[TISSUE_ID["liver tumour"]] = float(rng.uniform(4.0, 10.0))
    if has_tumour:
        canvas.paint(tumour, "liver tumour", ("liver",), record_radial=True)
    canvas.fill_pattern(Waves.draw(rng, 6, (14.0, 30.0), (0.3, 0.6)), 0.35, "bowel", "visceral fat")
    canvas.fill_pattern(Waves.draw(rng, 6, (6.0, 12.0), (0.3, 0.6)), 1.2, "gas", "bowel")
    return {"has_tumour": has_tumour}


def _build_head(canvas: Canvas, rng: np.random.Generator, with_tumour: bool | None) -> dict[str, Any]:
    s = rng.uniform(0.93, 1.04)
    head = Blob(
        np.array([rng.normal(0, 1.0), rng.normal(0, 1.5), -4.0 + rng.normal(0, 1.0)]),
        np.array([35.0, 42.0, 40.0]) * s * rng.uniform(0.97, 1.03, 3),
        bumps=rng.normal(0.0, 0.02, 8),
    )
    t_scalp, t_skull, t_csf, t_gm = (
        rng.uniform(2.0, 3.5),
        rng.uniform(3.0, 5.0),
        rng.uniform(1.5, 3.0),
        rng.uniform(4.5, 6.5),
    )
    canvas.paint(head, "scalp", ("air",))
    canvas.paint(head.shrunk(t_scalp), "skull", ("scalp",))
    canvas.paint(head.shrunk(t_scalp + t_skull), "cerebrospinal fluid", ("skull",))
    inner = head.shrunk(t_scalp + t_skull + t_csf)
    sulci = Waves.draw(rng, 6, (8.0, 16.0), (0.008, 0.016))
    brain = Blob(inner.center, inner.semi, inner.rotation, 0.0, inner.bumps, sulci)
    canvas.paint(brain, "grey matter", ("cerebrospinal fluid",))
    gyri = Waves.draw(rng, 8, (10.0, 20.0), (0.02, 0.035))
    wm = Blob(inner.center, inner.semi - t_gm, inner.rotation, 0.0, inner.bumps, gyri)
    canvas.paint(wm, "white matter", ("grey matter",))
    c = inner.center
    for side in (-1.0, 1.0):
        thalamus = organ(rng, c + np.array([7.0 * side, -3.0, 0.0]), (5.0, 7.0, 5.0), jitter=0.7)
        canvas.paint(thalamus, "grey matter", ("white matter",))
    for side in (-1.0, 1.0):
        ventricle = organ(rng, c + np.array([5.0 * side, 4.0, 7.0]), (3.0, 14.0, 5.0), 8.0 * side, jitter=0.7)
        canvas.paint(ventricle, "cerebrospinal fluid", ("white matter", "grey matter"))
    half_width = rng.uniform(0.6, 1.0)
    fissure_x, fissure_z = float(c[0]), float(c[2] + 4.0)
    canvas.paint(
        brain,
        "cerebrospinal fluid",
        ("grey matter",),
        where=lambda q: (np.abs(q[0] - fissure_x) < half_width) & (q[2] > fissure_z),
    )
    return {"has_tumour": False}


def _build_neck(canvas: Canvas, rng: np.random.Generator) -> None:
    s = rng.uniform(0.94, 1.05)
    neck = Blob(
        np.array([rng.normal(0, 1.0), -2.0 + rng.normal(0, 1.0), 0.0]),
        np.array([30.0 * s * rng.uniform(0.97, 1.03), 26.0 * s * rng.uniform(0.97, 1.03), np.inf]),
        bumps=rng.normal(0.0, 0.02, 8),
    )
    soft = ("muscle", "fat")
    canvas.paint(neck, "fat", ("air",))
    canvas.paint(neck.shrunk(rng.uniform(2.5, 4.5)), "muscle", ("fat",))
    canvas.fill_pattern(Waves.draw(rng, 6, (12.0, 25.0), (0.3, 0.6)), 0.6, "fat", "muscle")
    _paint_spine(canvas, rng, -11.0, soft)
    canvas.paint(tube(rng, 0.0, 9.0, (5.5, 4.0), jitter=0.7), "airway", soft)
    for side in (-1.0, 1.0):
        canvas.paint(tube(rng, 12.0 * side, 3.0, (2.5, 2.5)), "artery", soft)
        canvas.paint(tube(rng, 16.5 * side, 1.0, (3.5, 2.8)), "vein", soft)
        canvas.paint(organ(rng, (7.0 * side, 11.0, -28.0), (4.0, 3.5, 9.0)), "thyroid", soft)
        canvas.paint(organ(rng, (15.0 * side, 10.0, 18.0), (5.0, 4.0, 4.0)), "gland", soft)
    jaw = tube(rng, 0.0, 2.0, (25.0, 22.0))
    z_jaw, y_jaw = rng.uniform(22.0, 28.0), float(jaw.center[1])
    canvas.paint(
        jaw,
        "bone",
        soft,
        where=lambda q: (q[2] > z_jaw) & (q[1] > y_jaw) & (jaw.shrunk(3.0).radius(q) >= 1.0),
    )


def _build_headneck(canvas: Canvas, rng: np.random.Generator, with_tumour: bool | None) -> dict[str, Any]:
    _build_neck(canvas, rng)
    side = rng.choice([-1.0, 1.0])
    center = (side * rng.uniform(2.0, 6.0), rng.uniform(6.0, 12.0), rng.uniform(-8.0, 14.0))
    radius = math.exp(rng.uniform(math.log(4.0), math.log(12.0)))
    primary = organ(rng, center, (radius,) * 3, jitter=0.0, size=0.2, tilt=30.0, bumps=0.1)
    uptake_p, uptake_n = float(rng.uniform(5.0, 20.0)), float(rng.uniform(3.0, 12.0))
    n_nodes = int(rng.choice(4, p=[0.3, 0.35, 0.25, 0.1]))
    nodes = []
    for _ in range(3):
        node_side = side if rng.random() < 0.7 else -side
        c = (node_side * rng.uniform(11.0, 19.0), rng.uniform(-3.0, 8.0), rng.uniform(-18.0, 16.0))
        nodes.append(organ(rng, c, (rng.uniform(2.5, 7.0),) * 3, jitter=0.0, size=0.15, bumps=0.06))
    canvas.uptake[TISSUE_ID["primary tumour"]] = uptake_p
    canvas.uptake[TISSUE_ID["lymph node"]] = uptake_n
    canvas.necrosis[TISSUE_ID["primary tumour"]] = float(np.clip((radius - 7.0) / 6.0, 0.0, 0.6))
    has_tumour = with_tumour is not False
    if has_tumour:
        canvas.paint(primary, "primary tumour", ("muscle", "fat", "airway", "gland"), record_radial=True)
        for node in nodes[:n_nodes]:
            canvas.paint(node, "lymph node", ("muscle", "fat", "gland"), record_radial=True)
    return {
        "has_tumour": has_tumour,
        "primary_radius_mm": radius,
        "primary_uptake": uptake_p,
        "node_uptake": uptake_n,
        "num_nodes": n_nodes if has_tumour else 0,
    }


_BUILDERS: dict[str, Callable[[Canvas, np.random.Generator, bool | None], dict[str, Any]]] = {
    "abdomen": _build_abdomen,
    "head": _build_head,
    "headneck": _build_headneck,
}

"""PET activity concentration (Bq/mL) to body-weight SUV from the DICOM tags.

The formula (QIBA / the vendor-neutral definition used by dcm2niix, 3D Slicer and PyRadiomics)::

    SUVbw = C * W / D_ref
    D_ref = D_inj * 2 ** (-(t_ref - t_inj) / T_half)

with ``C`` the decay-corrected activity concentration of a voxel in Bq/mL (the stored pixel value
after RescaleSlope/Intercept), ``W`` the patient weight in grams (PatientWeight, kg, x 1000),
``D_inj`` the injected dose in Bq (RadionuclideTotalDose), ``T_half`` the radionuclide half-life
in seconds (RadionuclideHalfLife), ``t_inj`` the injection time (RadiopharmaceuticalStartDateTime,
or RadiopharmaceuticalStartTime on the series date) and ``t_ref`` the time the image values are
decay-corrected to: with DecayCorrection ``START`` the series start (SeriesDate/SeriesTime, or the
earliest AcquisitionDate/Time when the series time is later, as after vendor post-processing); with
``ADMIN`` the injection itself, so ``D_ref = D_inj``. Images already in SUV (Units ``GML``, g/mL)
are used as they are. Anything else (counts, DecayCorrection ``NONE``, a missing tag) is refused.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.valuerep import DA, DT, TM

from duplus.errors import InputError

SUV_UNITS = "SUVbw"


def _when(date: object, time: object) -> dt.datetime | None:
    if not date or not time:
        return None
    d, t = DA(str(date)), TM(str(time))
    return dt.datetime.combine(d, t) if d is not None and t is not None else None


def _naive(stamp: dt.datetime) -> dt.datetime:
    return stamp.replace(tzinfo=None)  # local clock time, as SeriesTime is


def _reference_time(datasets: Sequence[Dataset]) -> dt.datetime | None:
    """The start of the series, or the earliest acquisition when that is earlier (QIBA)."""
    first = datasets[0]
    series = _when(first.get("SeriesDate"), first.get("SeriesTime"))
    acquisitions = [
        w
        for w in (_when(d.get("AcquisitionDate"), d.get("AcquisitionTime")) for d in datasets)
        if w is not None
    ]
    earliest = min(acquisitions) if acquisitions else None
    if series is None:
        return earliest
    if earliest is not None and earliest < series:
        return earliest
    return series


def _injection_time(drug: Dataset, reference: dt.datetime) -> dt.datetime | None:
    stamp = drug.get("RadiopharmaceuticalStartDateTime")
    if stamp:
        parsed = DT(str(stamp))
        return _naive(parsed) if parsed is not None else None
    time = drug.get("RadiopharmaceuticalStartTime")
    if not time:
        return None
    injected = dt.datetime.combine(reference.date(), TM(str(time)))
    return injected - dt.timedelta(days=1) if injected > reference else injected  # injected the day before


def compute_suv_factor(datasets: Sequence[Dataset], source: str | Path) -> tuple[float, str]:
    """The factor that turns a PET series' Bq/mL values into SUVbw, and the resulting units.

    Args:
        datasets: the slices of one PET series (tags are read from the first; the acquisition
            times from all).
        source: the series' folder or archive, named in errors.

    Returns:
        ``(factor, units)``: multiply the rescaled pixel values by ``factor``; ``units`` is
        ``"SUVbw"``. For a series already in SUV (Units ``GML``) the factor is 1.

    Raises:
        InputError: units other than BQML/GML, DecayCorrection other than START/ADMIN, or a tag
            the conversion needs is missing (the message lists them).
    """
    first = datasets[0]
    units = str(first.get("Units", "")).upper()
    if units == "GML":
        return 1.0, SUV_UNITS
    if units != "BQML":
        raise InputError(
            source,
            f"PET Units {units or '(missing)'}: only BQML (converted to SUVbw) or GML (already SUV) are supported",
        )
    correction = str(first.get("DecayCorrection", "")).upper()
    if correction not in ("START", "ADMIN"):
        raise InputError(source, f"PET DecayCorrection {correction or '(missing)'}: SUV needs START or ADMIN")
    drugs = first.get("RadiopharmaceuticalInformationSequence") or []
    drug = drugs[0] if len(drugs) else Dataset()
    weight = first.get("PatientWeight")
    dose = drug.get("RadionuclideTotalDose")
    half_life = drug.get("RadionuclideHalfLife")
    reference = _reference_time(datasets)
    injected = _injection_time(drug, reference) if reference is not None else None
    missing = [
        name
        for name, value in (
            ("PatientWeight", weight),
            ("RadionuclideTotalDose", dose),
            ("RadionuclideHalfLife", half_life),
            ("SeriesDate/SeriesTime", reference),
            ("RadiopharmaceuticalStartDateTime", injected),
        )
        if value is None or (not isinstance(value, dt.datetime) and float(value) <= 0)
    ]
    if correction == "ADMIN":
        missing = [m for m in missing if m in ("PatientWeight", "RadionuclideTotalDose")]
    if missing:
        raise InputError(
            source, f"PET in Bq/mL cannot be converted to SUV: missing or zero {', '.join(missing)}"
        )
    decayed = float(dose)  # type: ignore[arg-type]
    if correction == "START":
        assert reference is not None and injected is not None
        elapsed = (reference - injected).total_seconds()
        if elapsed < 0:
            raise InputError(source, f"PET series starts {-elapsed:.0f} s before the injection time")
        decayed *= math.pow(2.0, -elapsed / float(half_life))  # type: ignore[arg-type]
    return float(weight) * 1000.0 / decayed, SUV_UNITS  # type: ignore[arg-type]

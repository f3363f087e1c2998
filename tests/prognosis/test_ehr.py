"""EHR records as text: missing values, mixed types, renames, units, validation, persistence."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from duplus.errors import InputError
from duplus.prognosis.ehr import (
    EHRTemplate,
    hecktor_template,
    load_template,
    record_to_text,
    records_to_texts,
    save_template,
)

HPV = "HPV status (0=-, 1=+)"


def test_hecktor_record() -> None:
    row = {"PatientID": "CHUP-001", "Age": 63.0, "Gender": "M", HPV: 1.0, "Tobacco": math.nan, "CenterID": 3}
    text = record_to_text(row, hecktor_template())
    assert text.startswith("Age: 63 years. Sex: male. Weight: unknown. Tobacco: unknown.")
    assert "HPV status: positive." in text
    assert "Chemotherapy: unknown." in text  # absent columns are written as unknown, never dropped
    assert "CHUP" not in text and "CenterID" not in text


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, "unknown"),
        (np.nan, "unknown"),
        ("", "unknown"),
        ("  ", "unknown"),
        ("NA", "unknown"),
        (pd.NA, "unknown"),
    ],
)
def test_missing_values_are_unknown(value, expected: str) -> None:
    template = EHRTemplate(columns=["Tobacco"])
    assert record_to_text({"Tobacco": value}, template) == f"Tobacco: {expected}."


def test_mixed_types_renames_units() -> None:
    template = EHRTemplate(
        rename={"wt": "Weight"},
        units={"Age": "years", "wt": "kg"},
        categorical_maps={"smoker": {"1": "yes", "0": "no"}, "sex": {"F": "female"}},
        float_digits=1,
        missing="not recorded",
    )
    row = {
        "id": 7,
        "time": 3.0,
        "event": 1,
        "Age": "63.25",
        "wt": 80,
        "smoker": 1.0,
        "sex": "F",
        "stage": "III",
        "x": None,
    }
    assert record_to_text(row, template) == (
        "Age: 63.2 years. Weight: 80.0 kg. smoker: yes. sex: female. stage: III. x: not recorded."
    )


def test_non_numeric_age_names_file_row_and_column(tmp_path: Path) -> None:
    df = pd.DataFrame({"id": ["a", "b"], "Age": [63, "sixty"], "Gender": ["M", "F"]})
    csv = tmp_path / "clinical.csv"
    template = hecktor_template()
    template.columns = ["Age", "Gender"]
    with pytest.raises(InputError) as info:
        records_to_texts(df, template, source=csv)
    msg = str(info.value)
    assert str(csv) in msg and "row 2" in msg and "'Age'" in msg and "sixty" in msg


def test_table_missing_a_template_column_is_an_error(tmp_path: Path) -> None:
    df = pd.DataFrame({"id": ["a"], "Age": [63]})
    with pytest.raises(InputError, match="missing clinical column"):
        records_to_texts(df, hecktor_template(), source=tmp_path / "clinical.csv")


def test_unmapped_category_is_written_as_is() -> None:
    text = record_to_text(
        {"Gender": "X"}, EHRTemplate(columns=["Gender"], categorical_maps={"Gender": {"M": "male"}})
    )
    assert text == "Gender: X."


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_template_round_trip(tmp_path: Path, suffix: str) -> None:
    template = hecktor_template()
    path = tmp_path / f"ehr_template{suffix}"
    save_template(template, path)
    assert load_template(path) == template


def test_yaml_numeric_category_keys_are_strings(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("columns: [hpv]\ncategorical_maps:\n  hpv: {0: negative, 1: positive}\n")
    assert record_to_text({"hpv": 1}, load_template(path)) == "hpv: positive."


def test_unknown_template_key_is_an_error(tmp_path: Path) -> None:
    from duplus.errors import ConfigError

    path = tmp_path / "t.yaml"
    path.write_text("colums: [Age]\n")
    with pytest.raises(ConfigError, match="colums"):
        load_template(path)

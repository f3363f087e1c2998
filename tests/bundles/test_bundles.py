"""Model bundles: the .duplus format round trip, tampering refused, the model card, import into
$DUPLUS_HOME, the -c resolver, and adapter bundles that name their base by sha256."""

from __future__ import annotations

import json
import logging
import math
import zipfile
from pathlib import Path

import pytest
import torch

from duplus.bundle_file import CARD, PAYLOAD, WEIGHTS, checkpoint_identities, file_sha256, read_bundle
from duplus.bundles.export import export_bundle
from duplus.bundles.store import import_bundle, list_models, resolve_checkpoint
from duplus.checkpoint import load_checkpoint, save_checkpoint
from duplus.cli import main
from duplus.errors import CheckpointError, InputError


def _payload(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "model": {
            "stem.weight": torch.randn(64, 64, generator=g),
            "head.bias": torch.randn(5, generator=g),
            "norm.num_batches": torch.tensor(7),
        },  # fmt: skip
        "model_config": {"preset": "tiny", "features": None},
        "text_config": {"encoder": "default", "pooling": "auto", "max_length": 77},
        "text_encoder_id": "default",
        "text_dim": 384,
        "preprocess": {"spacing": [1.5, 1.5, 1.5]},
        "patch_size": [32, 32, 32],
        "label_space": {"targets": ["liver", "spleen"]},
        "datasets": [
            {
                "name": "A",
                "modality": "CT",
                "region": "abdomen",
                "t1": "A CT scan of the abdomen",
                "labels": {"1": "liver", "2": "spleen"},
            }
        ],  # fmt: skip
        "prompt_overrides": {"prompts": ["x"], "embeddings": torch.ones(1, 3)},
        "step": 4,
        "best_metric": -math.inf,
        "train_state": {"optimizer": {"state": {}}, "rng": torch.zeros(3)},
    }


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    return save_checkpoint(tmp_path / "run" / "checkpoint_last.pt", _payload())


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DUPLUS_HOME", str(tmp_path / "home"))
    monkeypatch.setattr("duplus.bundles.store.packaged_models_dir", lambda: tmp_path / "packaged")
    return tmp_path / "home"


def _assert_same(a: object, b: object) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b)
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert list(map(type, a)) == list(map(type, b))  # type: ignore[arg-type]
        for x, y in zip(a, b, strict=True):  # type: ignore[call-overload]
            _assert_same(x, y)
    else:
        assert a == b


# ------------------------------------------------------------------------------ format
def test_round_trip_exact_without_training_state(ckpt: Path, tmp_path: Path) -> None:
    out = export_bundle(ckpt, tmp_path / "m")
    assert out.name == "m.duplus"
    loaded = load_checkpoint(out)
    expected = {k: v for k, v in load_checkpoint(ckpt).items() if k != "train_state"}
    _assert_same(expected, loaded)
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == sorted([CARD, PAYLOAD, WEIGHTS])
    assert export_bundle(ckpt, tmp_path / "again" / "m").read_bytes() == out.read_bytes()  # reproducible


def test_float16_storage_halves_weights_and_restores_dtype(ckpt: Path, tmp_path: Path) -> None:
    full = export_bundle(ckpt, tmp_path / "f32.duplus")
    half = export_bundle(ckpt, tmp_path / "f16.duplus", dtype="float16")
    with zipfile.ZipFile(full) as a, zipfile.ZipFile(half) as b:
        assert b.getinfo(WEIGHTS).file_size < 0.75 * a.getinfo(WEIGHTS).file_size
    w = load_checkpoint(half)["model"]["stem.weight"]
    assert w.dtype == torch.float32
    torch.testing.assert_close(w, load_checkpoint(ckpt)["model"]["stem.weight"], atol=2e-3, rtol=1e-3)
    assert load_checkpoint(half)["model"]["norm.num_batches"].dtype == torch.int64
    with pytest.raises(InputError, match="float64"):
        export_bundle(ckpt, tmp_path / "x.duplus", dtype="float64")


def test_model_card(ckpt: Path, tmp_path: Path) -> None:
    (ckpt.parent / "metrics.csv").write_text(
        "epoch,step,train_loss,dice/mean,dice/A/liver\n1,2,0.9,0.5,0.4\n2,4,0.8,0.7,0.65\n"
    )
    card = read_bundle(export_bundle(ckpt, tmp_path / "liver.duplus")).card
    assert card["kind"] == "model" and card["name"] == "liver" and card["preset"] == "tiny"
    assert card["targets"] == ["liver", "spleen"] and card["t1_prompts"] == ["A CT scan of the abdomen"]
    assert card["text_encoder"]["id"] == "default" and card["preprocessing"] == {"spacing": [1.5, 1.5, 1.5]}
    assert card["validation"] == {"dice/mean": 0.7, "dice/A/liver": 0.65}  # the row of the checkpoint's step
    assert card["source"] == {"file": "checkpoint_last.pt", "sha256": file_sha256(ckpt)}
    assert (
        card["files"][WEIGHTS]
        and card["storage_dtype"] == "float32"
        and card["parameters"] == 64 * 64 + 5 + 1
    )


# --------------------------------------------------------------------------- tampering
def _rewrite(src: Path, dst: Path, change: dict[str, bytes | None]) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        members = {n: zin.read(n) for n in zin.namelist()}
        members.update(change)
        for name, data in members.items():
            if data is not None:
                zout.writestr(name, data)
    return dst


def test_tampered_bundles_refused_with_one_line(ckpt: Path, tmp_path: Path, home: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    good = export_bundle(ckpt, tmp_path / "good.duplus")
    with zipfile.ZipFile(good) as zf:
        weights = bytearray(zf.read(WEIGHTS))
    weights[-1] ^= 0x01
    cases = {
        "weights": (_rewrite(good, tmp_path / "w.duplus", {WEIGHTS: bytes(weights)}), "sha256"),
        "pickle": (
            _rewrite(good, tmp_path / "p.duplus", {"archive/data.pkl": b"\x80\x04."}),
            "pickled payload",
        ),
        "extra": (_rewrite(good, tmp_path / "e.duplus", {"run.sh": b"echo"}), "unexpected member"),
        "missing": (_rewrite(good, tmp_path / "m.duplus", {PAYLOAD: None}), f"no {PAYLOAD}"),
    }
    for name, (path, words) in cases.items():
        with pytest.raises(CheckpointError, match=words):
            load_checkpoint(path)
        assert main(["import", "-q", str(path), "--name", name]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(path) in err[0] and words in err[0], err
        assert not (home / "models" / name).exists()


def test_pickled_checkpoint_still_refused(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (print, ("code ran",))

    bad = tmp_path / "bad.pt"
    torch.save({"format": "duplus-checkpoint", "x": Payload()}, bad)
    with pytest.raises(CheckpointError, match="pickled"):
        export_bundle(bad, tmp_path / "bad.duplus")
    assert not (tmp_path / "bad.duplus").exists()


# ------------------------------------------------------------------------- store + resolver
def test_import_list_and_resolve_by_name(ckpt: Path, tmp_path: Path, home: Path) -> None:
    bundle = export_bundle(ckpt, tmp_path / "liver.duplus")
    model = import_bundle(bundle)
    assert model.name == "liver" and model.path == home / "models" / "liver" / "model.duplus"
    assert model.path.read_bytes() == bundle.read_bytes()
    assert resolve_checkpoint("liver") == model.path
    with pytest.raises(InputError, match="already installed"):
        import_bundle(bundle)
    assert import_bundle(bundle, overwrite=True).path == model.path
    import_bundle(bundle, name="liver-v2")
    with pytest.raises(InputError, match="not a model name"):
        import_bundle(bundle, name="../evil")
    assert [m.name for m in list_models()] == ["liver", "liver-v2"]
    with pytest.raises(CheckpointError, match="installed: liver, liver-v2"):
        resolve_checkpoint("spleen")


def test_packaged_model_found_by_name(ckpt: Path, tmp_path: Path, home: Path) -> None:
    packaged = export_bundle(ckpt, tmp_path / "packaged" / "brain.duplus")
    assert resolve_checkpoint("brain") == packaged
    assert [(m.name, m.packaged) for m in list_models()] == [("brain", True)]


def test_run_folder_best_then_last(ckpt: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = ckpt.parent
    with caplog.at_level(logging.INFO, logger="duplus.bundles.store"):
        assert resolve_checkpoint(run) == ckpt
    assert "using checkpoint_last.pt" in caplog.text
    best = save_checkpoint(run / "checkpoint_best.pt", _payload(1))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="duplus.bundles.store"):
        assert resolve_checkpoint(str(run)) == best
    assert "using the run's checkpoint_best.pt" in caplog.text
    with pytest.raises(CheckpointError, match="without checkpoint_best.pt"):
        resolve_checkpoint(run.parent)


def test_models_command_lists(ckpt: Path, tmp_path: Path, home: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["models"]) == 0
    assert "no models installed" in capsys.readouterr().out
    assert main(["export", "-q", "-c", str(ckpt.parent), "-o", str(tmp_path / "liver.duplus")]) == 0
    assert main(["import", "-q", str(tmp_path / "liver.duplus")]) == 0
    capsys.readouterr()
    assert main(["models"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("liver\tinstalled\tpreset tiny\ttargets: liver, spleen")


# --------------------------------------------------------------------------------- adapters
def test_adapter_bundle_names_its_base(ckpt: Path, tmp_path: Path) -> None:
    from duplus.adapt.adapter_file import check_base_checkpoint, read_adapter_file, write_adapter_file

    adapter = write_adapter_file(
        tmp_path / "adapt" / "adapter.pt",
        {
            "base_checkpoint": {"path": str(ckpt), "sha256": file_sha256(ckpt)},
            "train": ["head"],
            "network_scope": "task",
            "text_lora": None,
            "model_state": {"head.bias": torch.zeros(5)},
            "scope": {"prompts": ["pancreas"], "datasets": [], "added_targets": ["pancreas"]},
            "label_space": {"targets": ["liver", "spleen", "pancreas"]},
        },
    )
    bundle = export_bundle(adapter, tmp_path / "pancreas.duplus")
    card = read_bundle(bundle).card
    assert card["kind"] == "adapter" and card["base"]["sha256"] == file_sha256(ckpt)
    assert card["added_targets"] == ["pancreas"]
    data = read_adapter_file(bundle)
    assert torch.equal(data["model_state"]["head.bias"], torch.zeros(5))
    with pytest.raises(CheckpointError, match="bundle of an adapter, not a checkpoint"):
        load_checkpoint(bundle)
    base_bundle = export_bundle(ckpt, tmp_path / "base.duplus")
    assert file_sha256(ckpt) in checkpoint_identities(base_bundle)
    check_base_checkpoint(data, bundle, base_bundle)  # the bundle answers to its source's sha256
    other = save_checkpoint(tmp_path / "other.pt", _payload(5))
    with pytest.raises(CheckpointError, match="trained on base checkpoint"):
        check_base_checkpoint(data, bundle, other)


def test_card_is_json_without_nan(ckpt: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(export_bundle(ckpt, tmp_path / "m.duplus")) as zf:
        json.loads(zf.read(CARD), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))


def test_adapter_resolved_from_file_folder_and_name(ckpt: Path, tmp_path: Path, home: Path) -> None:
    from duplus.adapt.adapter_file import write_adapter_file
    from duplus.bundles.store import resolve_adapter

    adapter = write_adapter_file(
        tmp_path / "adapt" / "adapter.pt",
        {"base_checkpoint": {"path": str(ckpt), "sha256": file_sha256(ckpt)}, "scope": {}, "label_space": {}},
    )
    assert resolve_adapter(adapter) == adapter
    assert resolve_adapter(adapter.parent) == adapter
    installed = import_bundle(export_bundle(adapter, tmp_path / "pancreas.duplus"))
    assert resolve_adapter("pancreas") == installed.path and installed.card["kind"] == "adapter"
    with pytest.raises(CheckpointError, match="without adapter.pt"):
        resolve_adapter(tmp_path)

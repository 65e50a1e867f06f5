"""tools/download.py: the Penn-Fudan command against a local archive served by file://."""

from __future__ import annotations

import io
import importlib.util
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "download.py"


def _official_sized_zip(path: Path, n: int = 170) -> None:
    """A zip with the official layout and image count (tiny images, one pedestrian each)."""
    buffer = io.BytesIO()
    ids = np.zeros((6, 8), dtype=np.uint8)
    ids[1:4, 2:5] = 1
    mask = io.BytesIO()
    Image.fromarray(ids, mode="L").save(mask, format="PNG")
    with zipfile.ZipFile(buffer, "w") as archive:
        for k in range(n):
            image = io.BytesIO()
            Image.new("RGB", (8, 6), (k, 0, 0)).save(image, format="PNG")
            archive.writestr(f"PennFudanPed/PNGImages/P{k:03d}.png", image.getvalue())
            archive.writestr(f"PennFudanPed/PedMasks/P{k:03d}_mask.png", mask.getvalue())
    path.write_bytes(buffer.getvalue())


def _load_tool():
    spec = importlib.util.spec_from_file_location("download_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args: str, env_root: Path, monkeypatch, capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of the tool's main(), in process (no second torch import)."""
    monkeypatch.setenv("DETBENCH_DATASETS", str(env_root))
    code = 0
    try:
        _load_tool().main(list(args))
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_penn_fudan_lands_where_the_catalog_looks(tmp_path, monkeypatch, capsys):
    archive = tmp_path / "PennFudanPed.zip"
    _official_sized_zip(archive)
    code, out, err = _run("penn_fudan", "--url", archive.as_uri(), env_root=tmp_path / "datasets",
                          monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    assert str(tmp_path / "datasets" / "PennFudanPed") in out
    folder = tmp_path / "datasets" / "PennFudanPed"
    assert len(list((folder / "PNGImages").iterdir())) == 170
    assert len(list((folder / "PedMasks").iterdir())) == 170
    from detbench.data import catalog

    spec = catalog.get("penn_fudan_train", root=tmp_path / "datasets")
    assert Path(spec.args["root"]) == folder


def test_a_broken_archive_fails_with_a_message_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    archive = tmp_path / "PennFudanPed.zip"
    archive.write_bytes(b"not a zip at all")
    code, _, err = _run("penn_fudan", "--url", archive.as_uri(), env_root=tmp_path / "datasets",
                        monkeypatch=monkeypatch, capsys=capsys)
    assert code != 0
    assert "download failed" in err and "zip" in err
    assert not (tmp_path / "datasets" / "PennFudanPed").exists()


def test_unknown_weights_name_lists_the_known_ones(tmp_path, monkeypatch, capsys):
    code, _, err = _run("weights", "torchvision://no_such_model", env_root=tmp_path, monkeypatch=monkeypatch,
                        capsys=capsys)
    assert code != 0 and "maskrcnn_resnet50_fpn_coco" in err


def test_penn_fudan_shows_progress_and_checks_the_hash(tmp_path, monkeypatch, capsys):
    import hashlib

    archive = tmp_path / "PennFudanPed.zip"
    _official_sized_zip(archive)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    code, _, err = _run("penn_fudan", "--url", archive.as_uri(), "--sha256", "0" * 64, env_root=tmp_path / "d1",
                        monkeypatch=monkeypatch, capsys=capsys)
    assert code != 0 and f"sha256 mismatch: got {digest}, expected {'0' * 64}" in err
    assert not (tmp_path / "d1" / "PennFudanPed").exists()
    code, _, err = _run("penn_fudan", "--url", archive.as_uri(), "--sha256", digest, env_root=tmp_path / "d2",
                        monkeypatch=monkeypatch, capsys=capsys)
    size_mb = archive.stat().st_size / 2**20
    assert code == 0 and f"PennFudanPed.zip: {size_mb:.1f} MB of {size_mb:.1f} MB (100 %)" in err

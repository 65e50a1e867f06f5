"""Loading detbench._C: actionable errors when it is missing or broken."""

import importlib.machinery

import pytest

from detbench import extension


def test_find_library_in_an_empty_folder(tmp_path):
    assert extension.find_library("_C", tmp_path) is None


def test_missing_library_error_says_how_to_build(tmp_path):
    with pytest.raises(extension.MissingExtensionError, match=r"pip install -e \. --no-build-isolation"):
        extension._load("_C", tmp_path)


def test_corrupt_library_error_names_the_file(tmp_path):
    bad = tmp_path / f"_C{importlib.machinery.EXTENSION_SUFFIXES[0]}"
    bad.write_bytes(b"not an ELF file")
    with pytest.raises(extension.MissingExtensionError, match="could not be loaded") as info:
        extension._load("_C", tmp_path)
    assert str(bad) in str(info.value)


def test_built_library_loads():
    extension.assert_has_ops()
    assert extension.has_ops()

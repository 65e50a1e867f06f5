"""The tools' shared command line: examples in --help, --resume/--no-resume, ConfigError as one line."""

from __future__ import annotations

import logging

import pytest

from detbench.cli import common
from detbench.cli.train import should_resume
from detbench.config import ConfigError, load_config
from detbench.utils.checkpoint import Checkpointer


def _parser():
    parser = common.argument_parser("detbench-x", "a tool", "  detbench-x --config-file a.yaml\n")
    common.add_resume_flags(parser)
    return parser


@pytest.mark.parametrize("argv, expected", [
    ([], None), (["--resume"], True), (["--no-resume"], False),
    (["--config-file", "a.yaml", "SOLVER.MAX_ITER", "-1", "--no-resume"], False),  # a flag after the pairs
])
def test_resume_flags(argv, expected):
    args = common.parse_args(_parser(), argv)
    assert args.resume is expected
    assert "--no-resume" not in args.opts


def test_help_shows_examples(capsys):
    with pytest.raises(SystemExit):
        common.parse_args(_parser(), ["--help"])
    out = capsys.readouterr().out
    assert "examples:\n  detbench-x --config-file a.yaml" in out and "--resume, --no-resume" in out


def _checkpointer(tmp_path, with_checkpoint: bool) -> Checkpointer:
    if with_checkpoint:
        (tmp_path / "model_0000010.pth").write_bytes(b"")
        (tmp_path / "last_checkpoint").write_text("model_0000010.pth")
    return Checkpointer(None, save_dir=tmp_path, save_to_disk=False)


@pytest.mark.parametrize("found, flag, expected", [
    (False, None, False), (True, None, True), (True, True, True), (True, False, False), (False, False, False),
])
def test_should_resume(tmp_path, found, flag, expected):
    cfg = load_config(None, ["OUTPUT_DIR", str(tmp_path)])
    assert should_resume(cfg, _checkpointer(tmp_path, found), flag, logging.getLogger("t")) is expected


def test_resume_without_a_checkpoint_is_a_config_error(tmp_path):
    cfg = load_config(None, ["OUTPUT_DIR", str(tmp_path)])
    with pytest.raises(ConfigError, match="has no last_checkpoint"):
        should_resume(cfg, _checkpointer(tmp_path, False), True, logging.getLogger("t"))


def test_config_error_is_one_line_and_status_2(capsys):
    def main():
        load_config(None, ["SOLVER.BASE_LR", "fast"])

    with pytest.raises(SystemExit) as info:
        common.run_tool("detbench-x", main)
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err.startswith("detbench-x: error: command line: SOLVER.BASE_LR must be of type float")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_output_dir_defaults_to_the_config_name(tmp_path):
    f = tmp_path / "my_recipe.yaml"
    f.write_text("SOLVER:\n  MAX_ITER: 3\n")
    assert load_config(f).OUTPUT_DIR == "output/my_recipe"
    assert load_config(None).OUTPUT_DIR == "output/defaults"
    assert load_config(f, ["OUTPUT_DIR", "runs/{config}-b"]).OUTPUT_DIR == "runs/my_recipe-b"


def test_unknown_dataset_and_bad_weights_are_one_line_too(capsys, tmp_path):
    from detbench.data import catalog
    from detbench.utils.checkpoint import read_weights

    (tmp_path / "w.pth").write_bytes(b"not a checkpoint")
    for fail, expected in ((lambda: catalog.get("coco_2017_vall"), "unknown dataset 'coco_2017_vall'"),
                           (lambda: read_weights(tmp_path / "w.pth"), "is not a file written by torch.save")):
        with pytest.raises(SystemExit) as info:
            common.run_tool("detbench-x", fail)
        err = capsys.readouterr().err
        assert info.value.code == 2 and err.startswith("detbench-x: error: ") and expected in err
        assert err.count("\n") == 1

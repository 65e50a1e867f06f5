"""TEST.EXPECTED_RESULTS: both entry forms, the sigma window, missing results and load-time errors."""

from __future__ import annotations

import logging

import pytest

from detbench.config import ConfigError, load_config
from detbench.engine.expected_results import ExpectedResultsError, assert_expected_results, check_expected_results

RESULTS = {"val_a": {"bbox": {"AP": 0.50, "AP50": 0.80}, "segm": {"AP": 0.40}},
           "val_b": {"bbox": {"AP": 0.30, "AP50": 0.60}}}


def test_window_is_mean_plus_minus_sigma_tol_std(caplog):
    with caplog.at_level(logging.INFO, logger="detbench.expected_results"):
        assert check_expected_results(RESULTS, [["val_a", "bbox", "AP", [0.48, 0.005]]], 4) == []  # 0.48 +- 0.02
    assert "PASS: val_a bbox AP = 0.5000" in caplog.text
    failures = check_expected_results(RESULTS, [["val_a", "bbox", "AP", [0.48, 0.004]]], 4)  # up to 0.496
    assert len(failures) == 1 and failures[0].startswith("val_a bbox AP = 0.5000, expected 0.4800")
    assert check_expected_results(RESULTS, [["val_a", "segm", "AP", [0.40, 0.0]]], 4) == []  # std 0: exact


def test_three_item_entries_apply_to_every_dataset():
    failures = check_expected_results(RESULTS, [["bbox", "AP50", [0.8, 0.01]]], 3)
    assert failures == ["val_b bbox AP50 = 0.6000, expected 0.8000 +- 3 x 0.0100 = [0.7700, 0.8300]"]


def test_missing_task_fails_by_name_and_assert_raises():
    failures = check_expected_results(RESULTS, [["val_b", "segm", "AP", [0.4, 0.1]]], 4)
    assert failures == ["val_b segm AP: no such result (have: ['bbox'])"]
    with pytest.raises(ExpectedResultsError, match="val_b segm AP: no such result"):
        assert_expected_results(RESULTS, [["val_b", "segm", "AP", [0.4, 0.1]]], 4)
    assert_expected_results(RESULTS, [], 4)  # nothing expected: nothing checked
    with pytest.raises(ExpectedResultsError, match="no evaluation results to check"):
        assert_expected_results({}, [["bbox", "AP", [0.4, 0.1]]], 4)  # not a silent pass


@pytest.mark.parametrize("entry, message", [
    ('[["bbox", "AP"]]', "must be \\[task, metric, \\[mean, std\\]\\]"),
    ('[["bbox", "AP", [0.3]]]', "must be \\[mean, std\\]"),
    ('[["bbox", "AP", [0.3, -0.1]]]', "std >= 0"),
    ('[["bbox", 3, [0.3, 0.1]]]', "non-empty strings"),
], ids=["too-short", "no-std", "negative-std", "metric-not-a-string"])
def test_malformed_entries_are_refused_at_load_time(entry, message):
    with pytest.raises(ConfigError, match=f"TEST.EXPECTED_RESULTS entry .*{message}"):
        load_config(None, ["TEST.EXPECTED_RESULTS", entry])


def test_well_formed_entries_load():
    cfg = load_config(None, ["TEST.EXPECTED_RESULTS", '[["bbox", "AP", [0.3, 0.01]], ["shapes_val", "segm", "AP", [0.2, 0]]]'])
    assert len(cfg.TEST.EXPECTED_RESULTS) == 2


def test_check_final_results_exits_non_zero_naming_the_failure():
    from detbench.engine.launch import check_final_results

    cfg = load_config(None, ["TEST.EXPECTED_RESULTS", '[["val_b", "bbox", "AP", [0.5, 0.01]]]'])
    with pytest.raises(SystemExit, match="val_b bbox AP = 0.3000"):
        check_final_results(cfg, RESULTS)
    check_final_results(load_config(None, ["TEST.EXPECTED_RESULTS", '[["bbox", "AP50", [0.7, 0.05]]]']), RESULTS)

"""TEST.EXPECTED_RESULTS: regression checks of evaluation results, as in maskrcnn-benchmark.

Each entry is ``[task, metric, [mean, std]]`` (maskrcnn-benchmark's form, checked on every
DATASETS.TEST dataset) or ``[dataset, task, metric, [mean, std]]`` (one dataset). A result
passes when it lies in ``mean +- TEST.EXPECTED_RESULTS_SIGMA_TOL * std`` (inclusive, so a
std of 0 asks for the exact value). Unlike maskrcnn-benchmark, which only logs, a failed
check makes the tool exit with a non-zero status (:class:`ExpectedResultsError`).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

from detbench.config.validate import parse_expected_result

logger = logging.getLogger("detbench.expected_results")


class ExpectedResultsError(RuntimeError):
    """At least one TEST.EXPECTED_RESULTS entry was not met (the message lists each)."""


def check_expected_results(
    results: Mapping[str, Mapping[str, Mapping[str, float]]], expected: Sequence[Sequence[Any]], sigma_tol: float
) -> list[str]:
    """Check ``results`` ({dataset: {task: {metric: value}}}) against ``expected``.

    Logs PASS / FAIL per (dataset, entry) and returns the failure messages (empty: all met).
    A task or metric missing from the results is a failure, named as such, and so are
    expectations with no results at all.
    """
    failures = []
    if expected and not results:  # e.g. DATASETS.TEST empty: nothing would be checked at all
        failures.append("no evaluation results to check (is DATASETS.TEST empty?)")
        logger.error("FAIL: %s", failures[-1])
    for entry in expected:
        name, task, metric, mean, std = parse_expected_result(entry)
        lo, hi = mean - sigma_tol * std, mean + sigma_tol * std
        for dataset in [name] if name is not None else list(results):
            value = results.get(dataset, {}).get(task, {}).get(metric)
            where = f"{dataset} {task} {metric}"
            if value is None:
                failures.append(f"{where}: no such result (have: {sorted(results.get(dataset, {}))})")
                logger.error("FAIL: %s", failures[-1])
                continue
            message = f"{where} = {value:.4f}, expected {mean:.4f} +- {sigma_tol:g} x {std:.4f} = [{lo:.4f}, {hi:.4f}]"
            if lo <= value <= hi:
                logger.info("PASS: %s", message)
            else:
                failures.append(message)
                logger.error("FAIL: %s", message)
    return failures


def assert_expected_results(results: Mapping, expected: Sequence[Sequence[Any]], sigma_tol: float) -> None:
    """:func:`check_expected_results`, raising :class:`ExpectedResultsError` on any failure."""
    failures = check_expected_results(results, expected, sigma_tol)
    if failures:
        raise ExpectedResultsError("TEST.EXPECTED_RESULTS not met:\n  " + "\n  ".join(failures))

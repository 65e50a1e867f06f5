"""SmoothedValue statistics, MetricLogger formatting, and setup_logger (the logging side of training)."""

import logging

import pytest
import torch

from detbench.utils.logger import setup_logger
from detbench.utils.metric_logger import MetricLogger, SmoothedValue


def test_smoothed_value_window_and_global_statistics():
    v = SmoothedValue(window_size=3)
    for x in (1.0, 2.0, 3.0, 10.0):
        v.update(x)
    # window [2, 3, 10]; all values [1, 2, 3, 10]
    assert (v.value, v.median, v.avg, v.global_avg, v.count) == (10.0, 3.0, 5.0, 4.0, 4)
    even = SmoothedValue(window_size=4)
    for x in (4.0, 1.0, 3.0, 2.0):
        even.update(x)
    assert even.median == 2.0 == torch.tensor(list(even.deque)).median().item()  # maskrcnn-benchmark's: torch.median


def test_smoothed_value_rejects_empty_window():
    with pytest.raises(ValueError, match="window_size"):
        SmoothedValue(window_size=0)


def test_metric_logger_format_and_access():
    meters = MetricLogger(delimiter="  ", window_size=2)
    meters.update(loss=torch.tensor(0.5), time=1)
    meters.update(loss=torch.tensor([1.5]), time=2)
    meters.update(loss=2.5, time=6)
    # loss window [1.5, 2.5] -> median 1.5 (the lower middle), all -> 1.5; time window [2, 6] -> 2, all -> 3
    assert str(meters) == "loss: 1.5000 (1.5000)  time: 2.0000 (3.0000)"
    assert meters.time.global_avg == 3.0 and list(meters.meters) == ["loss", "time"]
    with pytest.raises(AttributeError, match="no meter 'data'; known: loss, time"):
        meters.data


def test_metric_logger_rejects_non_scalars():
    meters = MetricLogger()
    with pytest.raises(ValueError, match="loss must be a scalar"):
        meters.update(loss=torch.ones(2))
    with pytest.raises(TypeError, match="lr must be a number"):
        meters.update(lr="0.1")
    assert str(meters) == ""


@pytest.fixture
def logger_name(request):
    """A logger name unique to the test; its handlers are closed afterwards."""
    name = f"detbench_test.{request.node.name}"
    yield name
    logger = logging.getLogger(name)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


def test_rank0_logs_to_stdout_and_file_once(tmp_path, capsys, logger_name):
    setup_logger(logger_name, tmp_path, distributed_rank=0)
    logger = setup_logger(logger_name, tmp_path, distributed_rank=0)  # a second setup adds no duplicates
    logger.info("first %d", 1)
    logging.getLogger(logger_name + ".child").debug("from a child")
    out = capsys.readouterr().out
    assert out.count("first 1") == 1 and out.count("from a child") == 1
    assert f"{logger_name} INFO: first 1" in out
    text = (tmp_path / "log.txt").read_text()
    assert text.count("first 1") == 1 and "from a child" in text


def test_other_ranks_log_nothing(tmp_path, capsys, logger_name):
    logger = setup_logger(logger_name, tmp_path, distributed_rank=1)
    logger.error("should not appear")
    logger.warning("nor this")
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert not (tmp_path / "log.txt").exists()


def test_no_file_without_save_dir(tmp_path, capsys, logger_name, monkeypatch):
    monkeypatch.chdir(tmp_path)
    setup_logger(logger_name, "", distributed_rank=0).info("hello")
    assert "hello" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []

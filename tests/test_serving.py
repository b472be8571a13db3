"""The parallel-worker check: refused for streaming-only runtimes, an error log for others."""

from __future__ import annotations

import logging
import multiprocessing

import pytest
from mlserver.parallel import Worker
from mlserver.settings import ModelParameters, ModelSettings, Settings

from mlserver_streaming import WordStreamModel
from mlserver_streaming.errors import InvalidSettings
from mlserver_streaming.serving import check_streaming_server, in_parallel_worker

FIX = '"parallel_workers": 0 in settings.json'


@pytest.fixture
def in_worker(monkeypatch):
    """This process posing as one of MLServer's parallel workers (never started)."""
    worker = Worker(Settings(), multiprocessing.Queue())
    monkeypatch.setattr(multiprocessing, "current_process", lambda: worker)
    return worker


def word_model() -> WordStreamModel:
    return WordStreamModel(
        ModelSettings(name="words", implementation=WordStreamModel, parameters=ModelParameters())
    )


def test_the_test_process_is_no_parallel_worker(caplog):
    assert not in_parallel_worker()
    check_streaming_server(word_model(), streaming_only=True)
    assert not caplog.records


def test_a_parallel_worker_is_recognised(in_worker):
    assert in_parallel_worker()


def test_a_streaming_only_runtime_is_refused_naming_the_setting(in_worker):
    with pytest.raises(InvalidSettings) as info:
        check_streaming_server(word_model(), streaming_only=True)
    message = str(info.value)
    assert message.startswith("model 'words' is loading in MLServer's parallel inference pool")
    assert "WordStreamModel only streams" in message and FIX in message
    assert info.value.status_code == 422


def test_a_runtime_with_a_unary_path_loads_with_an_error_logged(in_worker, caplog):
    with caplog.at_level(logging.ERROR, logger="mlserver_streaming.serving"):
        check_streaming_server(word_model(), streaming_only=False)
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert "model 'words'" in record.getMessage() and FIX in record.getMessage()
    assert "unary calls still work" in record.getMessage()


async def test_the_word_model_refuses_to_load_in_a_worker(in_worker):
    with pytest.raises(InvalidSettings, match="WordStreamModel only streams"):
        await word_model().load()

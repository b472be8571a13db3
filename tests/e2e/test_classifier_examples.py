"""The classifier's example clients run as-is against a live server and print what they promise."""

from __future__ import annotations

import re

import pytest

from .test_examples import run_example

pytestmark = pytest.mark.e2e

PREDICTION = re.compile(r"row (\d+): (benign|malignant) \(confidence (0|1)\.\d{3}\), diagnosed \w+")


def test_rest_example_prints_one_prediction_per_row(server):
    header, *rows = run_example(server, "classifier_rest.py").splitlines()
    assert header == "tumor-classifier version 2"
    assert [int(PREDICTION.match(line)[1]) for line in rows] == [17, 18, 19, 20, 21]
    assert rows[0].startswith("row 17: malignant") and rows[2].startswith("row 19: benign")


def test_sse_example_prints_progress_chunk_by_chunk(server):
    *chunks, last = run_example(server, "classifier_rest_sse.py").splitlines()
    assert len(chunks) == 10
    assert chunks[0].startswith("rows      0-1999   of 20000 ( 10%): ")
    assert chunks[-1].startswith("rows  18000-19999  of 20000 (100%): ")
    assert last == "finished: complete"


def test_grpc_bidi_example_prints_each_row_as_it_is_answered(server):
    lines = run_example(server, "classifier_grpc_bidi.py").splitlines()
    assert [int(PREDICTION.match(line)[1]) for line in lines] == list(range(16, 24))
    assert all(line.endswith("[version 2]") for line in lines)

"""What a client sees of an error: a typed error's message, or an id for the server log."""

from __future__ import annotations

import logging
import re

from mlserver_streaming.errors import InvalidParameter, client_message


def test_a_typed_error_says_what_was_wrong() -> None:
    err = InvalidParameter("top_p must be in (0, 1], got 1.5.")
    assert client_message(err) == "top_p must be in (0, 1], got 1.5."


def test_an_unexpected_error_is_an_id_whose_detail_is_in_the_log(caplog) -> None:
    err = ConnectionError("redis at 10.0.0.7:6379 refused")  # internals: no client's business
    with caplog.at_level(logging.ERROR, logger="mlserver_streaming.errors"):
        message = client_message(err, "redis unavailable, retry later")
    found = re.fullmatch(
        r"redis unavailable, retry later \(error id ([0-9a-f]{12})\); the server log has "
        r"the details\.",
        message,
    )
    assert found is not None and "10.0.0.7" not in message
    (record,) = caplog.records
    assert found.group(1) in record.getMessage() and record.exc_info is not None
    assert record.exc_info[1] is err

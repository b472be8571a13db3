"""StoppingCriteria and StopSequenceMatcher: feed tokens or text, assert what comes out."""

from __future__ import annotations

import pytest

from mlserver_streaming.events import FinishReason
from mlserver_streaming.text.sample.params import GenerationParams
from mlserver_streaming.text.sample.stopping import StoppingCriteria, StopSequenceMatcher

EOS = 0


def feed_all(matcher: StopSequenceMatcher, deltas: list[str]) -> tuple[str, bool]:
    """Emitted text and whether a stop matched, flushing like the runtime does at the end."""
    emitted, matched = "", False
    for delta in deltas:
        text, matched = matcher.feed(delta)
        emitted += text
        if matched:
            return emitted, True
    return emitted + matcher.flush(), matched


def test_runs_until_length() -> None:
    criteria = StoppingCriteria(eog_token_ids={EOS}, max_new_tokens=3)
    assert [criteria(5), criteria(6), criteria(7)] == [
        (False, None),
        (False, None),
        (True, FinishReason.LENGTH),
    ]


def test_stops_on_eos() -> None:
    criteria = StoppingCriteria(eog_token_ids={EOS}, max_new_tokens=10)
    assert criteria(5) == (False, None)
    assert criteria(EOS) == (True, FinishReason.EOS)


def test_eos_on_the_last_allowed_token_reports_eos() -> None:
    criteria = StoppingCriteria(eog_token_ids={EOS}, max_new_tokens=2)
    assert criteria(5) == (False, None)
    assert criteria(EOS) == (True, FinishReason.EOS)


def test_without_eos_id_only_length_stops() -> None:
    criteria = StoppingCriteria.from_params(
        GenerationParams(max_tokens=2, seed=0), eog_token_ids=()
    )
    assert [criteria(0), criteria(0)] == [(False, None), (True, FinishReason.LENGTH)]


@pytest.mark.parametrize(
    ("stop", "deltas", "expected"),
    [
        pytest.param(["KING:"], ["Hello ", "world"], ("Hello world", False), id="no-stop"),
        pytest.param(["KING:"], ["To be. KING:", " Aye"], ("To be. ", True), id="in-one-delta"),
        pytest.param(["KING:"], ["a KI", "N", "G: b"], ("a ", True), id="spans-three-deltas"),
        pytest.param(["\n\n"], ["a\n", "\n", "b"], ("a", True), id="newlines"),
        pytest.param(["KING:"], ["a KIN", "E b"], ("a KINE b", False), id="false-prefix"),
        pytest.param(["KING:"], ["a KIN"], ("a KIN", False), id="prefix-flushed-at-end"),
        pytest.param(["ab", "abc"], ["xa", "bc"], ("x", True), id="shorter-is-prefix"),
        pytest.param(["abc", "b"], ["abc"], ("a", True), id="earliest-ending-wins"),
        pytest.param(["abc", "b"], ["a", "b", "c"], ("a", True), id="same-split-by-chars"),
        pytest.param(["abcd", "bce"], ["ab", "c", "e"], ("a", True), id="second-overlaps"),
        pytest.param([], ["any", "thing"], ("anything", False), id="no-stop-sequences"),
    ],
)
def test_stop_sequences(stop: list[str], deltas: list[str], expected: tuple[str, bool]) -> None:
    assert feed_all(StopSequenceMatcher(stop), deltas) == expected


def test_held_text_is_released_in_order() -> None:
    matcher = StopSequenceMatcher(["KING:"])
    assert matcher.feed("a K") == ("a ", False)
    assert matcher.feed("I") == ("", False)
    assert matcher.feed("X") == ("KIX", False)
    assert matcher.feed("K") == ("", False)
    assert matcher.flush() == "K"


def test_nothing_after_a_match() -> None:
    matcher = StopSequenceMatcher(["."])
    assert matcher.feed("end. more") == ("end", True)
    assert matcher.feed("again") == ("", True)
    assert matcher.flush() == ""

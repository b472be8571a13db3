"""CsvRowParser: rows out of CSV bytes fed in arbitrary pieces, and errors naming the line."""

from __future__ import annotations

import numpy as np
import pytest

from mlserver_streaming.classifier.csv_stream import CsvRowError, CsvRowParser

ROWS = np.array([[1.0, 2.5, -3.0], [4.0, 5.0, 6e-3], [7.0, 8.0, 9.0]])
CSV = b"a,b,c\n1,2.5,-3\n4,5,6e-3\n7,8,9\n"


def parse_all(parser: CsvRowParser, pieces: list[bytes]) -> tuple[np.ndarray, CsvRowError | None]:
    """Every row the parser returns for these pieces and its close, and the error if any."""
    out = []
    for piece in pieces:
        parsed = parser.feed(piece)
        out.append(parsed.rows)
        if parsed.error is not None:
            return np.concatenate(out), parsed.error
    parsed = parser.close()
    out.append(parsed.rows)
    return np.concatenate(out), parsed.error


@pytest.mark.parametrize("size", [1, 2, 3, 7, len(CSV)], ids=lambda s: f"pieces-of-{s}")
def test_lines_split_across_pieces(size: int) -> None:
    pieces = [CSV[i : i + size] for i in range(0, len(CSV), size)]
    rows, error = parse_all(CsvRowParser(3), pieces)
    assert error is None
    np.testing.assert_array_equal(rows, ROWS)


def test_rows_come_as_soon_as_their_line_ends() -> None:
    parser = CsvRowParser(3)
    assert parser.feed(b"1,2,3\n4,5").rows.tolist() == [[1, 2, 3]]
    assert parser.feed(b",6").rows.shape == (0, 3)
    assert parser.feed(b"\n").rows.tolist() == [[4, 5, 6]]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"1,2.5,-3\r\n4,5,6e-3\r\n7,8,9\r\n", id="crlf"),
        pytest.param(b"1,2.5,-3\n\n4,5,6e-3\n  \n7,8,9", id="blank-lines-no-final-newline"),
        pytest.param(b'"1", 2.5 ,"-3"\n4,5,6e-3\n7,8,9\n', id="quoted-and-spaced"),
        pytest.param(b"\xef\xbb\xbfx,y,z\r\n1,2.5,-3\n4,5,6e-3\n7,8,9\n", id="bom-and-header"),
        pytest.param(b'\n"a,1","b","c"\n1,2.5,-3\n4,5,6e-3\n7,8,9\n', id="quoted-header"),
    ],
)
def test_formats(data: bytes) -> None:
    rows, error = parse_all(CsvRowParser(3), [data])
    assert error is None
    np.testing.assert_array_equal(rows, ROWS)


def test_multibyte_header_split_inside_a_character() -> None:
    data = "é,ü,ß\n1,2,3\n".encode()
    rows, error = parse_all(CsvRowParser(3), [data[:1], data[1:]])
    assert error is None and rows.tolist() == [[1, 2, 3]]


def test_header_modes() -> None:
    numeric_header = b"0,1,2\n1,2,3\n"
    assert parse_all(CsvRowParser(3, header="yes"), [numeric_header])[0].tolist() == [[1, 2, 3]]
    assert len(parse_all(CsvRowParser(3, header="auto"), [numeric_header])[0]) == 2
    rows, error = parse_all(CsvRowParser(3, header="no"), [b"a,b,c\n1,2,3\n"])
    assert rows.shape == (0, 3) and error is not None and error.line == 1


@pytest.mark.parametrize(
    ("data", "line", "good", "message"),
    [
        pytest.param(
            b"a,b,c\n1,2,3\n4,5\n7,8,9\n",
            3,
            1,
            "line 3: expected 3 comma-separated numbers, got 2.",
            id="too-few",
        ),
        pytest.param(
            b"1,2,3\n\n4,5,six\n",
            3,
            1,
            "line 3: field 3 is not a number: 'six'.",
            id="not-a-number",
        ),
        pytest.param(
            b"1,2,3\n4,,6\n", 2, 1, "line 2: field 2 is not a number: ''.", id="empty-field"
        ),
        pytest.param(
            b"1,2,3\n4,nan,6\n",
            2,
            1,
            "line 2: field 2 must be a finite number, got 'nan'.",
            id="nan",
        ),
        pytest.param(
            b"a,b\n1,2,3\n",
            1,
            0,
            "line 1: the header has 2 columns, the model takes 3.",
            id="header",
        ),
        pytest.param(b"1,2,3\n\xff,1,1\n", 2, 1, "line 2: not UTF-8 text", id="not-utf8"),
    ],
)
def test_bad_line_is_named_and_earlier_rows_stand(
    data: bytes, line: int, good: int, message: str
) -> None:
    rows, error = parse_all(CsvRowParser(3), [data])
    assert error is not None and error.line == line
    assert str(error).startswith(message)
    assert rows.shape == (good, 3)


def test_bad_line_in_a_later_piece_keeps_line_numbers() -> None:
    parser = CsvRowParser(2)
    assert len(parser.feed(b"1,2\n3,4\n").rows) == 2
    parsed = parser.feed(b"5,6\n7,x\n9,9\n")
    assert parsed.rows.tolist() == [[5, 6]]
    assert parsed.error is not None and parsed.error.line == 4


def test_a_line_that_never_ends_fails_as_soon_as_it_cannot_be_a_row() -> None:
    parser = CsvRowParser(3)
    assert parser.feed(b"1,2,3\n").rows.tolist() == [[1, 2, 3]]
    piece = b"1" * 100  # no line break, ever: a 64 MiB body of these used to be read whole
    fed = 0
    while (parsed := parser.feed(piece)).error is None:
        fed += 1
        assert fed * len(piece) <= parser.max_line  # refused once past a row's length
    assert parsed.error.line == 2 and "longer than 400 characters" in str(parsed.error)
    assert parsed.rows.shape == (0, 3)


def test_a_long_line_that_ends_in_the_same_piece_keeps_the_rows_before_it() -> None:
    parser = CsvRowParser(3)
    parsed = parser.feed(b"1,2,3\n4,5,6\n" + b"7" * 1000)
    assert parsed.rows.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert parsed.error is not None and parsed.error.line == 3

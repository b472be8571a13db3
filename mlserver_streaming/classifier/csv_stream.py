"""CSV bytes → float64 feature rows, fed piece by piece as an upload arrives.

A pure decoder (httpx-sse's habit): it knows nothing of the network, so lines split across
network chunks, CRLF and the header rule are tested without a server. The format:

- UTF-8 (a leading BOM is dropped); lines end with LF or CRLF; blank lines are skipped.
- One row per line: exactly `n_features` numbers separated by commas, spaces around them
  allowed, each optionally in double quotes (`"1.5"`). A quoted field cannot hold a comma
  or a line break: numbers never need one.
- Header (`header="auto"`, the default): the first non-blank line is a header when none of
  its fields is a number; it must still have `n_features` fields. `"yes"` always takes the
  first line as a header, `"no"` never.
- Every row must be finite (no nan or inf), as on the V2 path.

A line longer than `MAX_FIELD_CHARS` per feature cannot be a row (nor a header): the
upload ends with that line's error as soon as it is that long, whether or not its end came.

Line numbers in errors are 1-based and count every physical line (header and blank lines
included), so they match what an editor shows.
"""

from __future__ import annotations

import codecs
import csv
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..errors import InvalidInput

HeaderMode = Literal["auto", "yes", "no"]
HEADER_MODES: tuple[HeaderMode, ...] = ("auto", "yes", "no")
# Bytes that are not UTF-8 decode to this, so the bad line (not the whole piece) is named.
NOT_UTF8 = "\ufffd"
MAX_FIELD_CHARS = 100
"""Characters a line may hold per feature (and once more for slack): room for any float,
quotes and spaces, or a header's column names."""


class CsvRowError(InvalidInput):
    """A line of an upload that is not a row of the model's features."""

    def __init__(self, line: int, problem: str):
        super().__init__(f"line {line}: {problem}")
        self.line = line


@dataclass(frozen=True)
class ParsedRows:
    """The rows of the complete lines fed so far, up to the first bad line."""

    rows: np.ndarray
    """[k, n_features] float64; k may be 0."""

    error: CsvRowError | None = None
    """The first bad line, if one was met; `rows` are the good rows before it."""


class CsvRowParser:
    """Feed bytes as they arrive; each call returns the rows of the lines it completed."""

    def __init__(self, n_features: int, header: HeaderMode = "auto"):
        self.n_features = n_features
        self._header: HeaderMode | None = header  # None once the first line is decided
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        self.max_line = MAX_FIELD_CHARS * (n_features + 1)
        self._partial: list[str] = []  # the text after the last line break, as it came
        self._partial_len = 0
        self._line = 0  # physical lines consumed so far
        self._failed = False

    def feed(self, data: bytes) -> ParsedRows:
        """The rows of the lines `data` completes (with what came before)."""
        text = self._decoder.decode(data)
        if "\n" in text:  # join the waiting pieces once, when their line ends
            lines = ("".join(self._partial) + text).split("\n")
            last = lines.pop()
            self._partial, self._partial_len = [last], len(last)
            parsed = self._parse(lines)
            if parsed.error is not None:
                return parsed
        else:
            self._partial.append(text)
            self._partial_len += len(text)
            parsed = ParsedRows(self._empty())
        if self._partial_len > self.max_line:  # a line that can be no row: stop reading it
            problem = (
                f"longer than {self.max_line} characters; a row of {self.n_features} numbers "
                f"is shorter (is the file CSV with one row per line?)."
            )
            return self._fail(CsvRowError(self._line + 1, problem), parsed.rows.tolist())
        return parsed

    def close(self) -> ParsedRows:
        """The end of the upload: the rows of a last line without a line break."""
        text = "".join(self._partial) + self._decoder.decode(b"", final=True)
        self._partial, self._partial_len = [], 0
        return self._parse([text] if text else [])

    def _parse(self, lines: list[str]) -> ParsedRows:
        if self._failed:
            raise RuntimeError("CsvRowParser used after an error")
        first = self._line + 1
        self._line += len(lines)
        lines = [line.strip() for line in lines]
        if self._header is not None:
            lines, first, error = self._take_header(lines, first)
            if error is not None:
                return self._fail(error)
        numbered = [(first + i, line) for i, line in enumerate(lines) if line]
        if not numbered:
            return ParsedRows(self._empty())
        try:  # fast path: numpy's C parser over every line at once
            rows = np.loadtxt(
                [line for _, line in numbered],
                delimiter=",",
                quotechar='"',
                dtype=np.float64,
                ndmin=2,
            )
            if rows.shape[1] == self.n_features and np.isfinite(rows).all():
                return ParsedRows(rows)
        except ValueError:
            pass
        return self._slow_parse(numbered)

    def _take_header(
        self, lines: list[str], first: int
    ) -> tuple[list[str], int, CsvRowError | None]:
        """Drop the header line if there is one; (remaining lines, their first number, error)."""
        for i, line in enumerate(lines):
            if not line:
                continue
            if NOT_UTF8 in line:
                return [], first, CsvRowError(first + i, "not UTF-8 text.")
            fields = next(csv.reader([line]))
            header = self._header == "yes" or (
                self._header == "auto" and not any(_is_number(f) for f in fields)
            )
            self._header = None
            if not header:
                return lines[i:], first + i, None
            if len(fields) != self.n_features:
                problem = (
                    f"the header has {len(fields)} columns, the model takes {self.n_features}."
                )
                return [], first, CsvRowError(first + i, problem)
            return lines[i + 1 :], first + i + 1, None
        return [], first + len(lines), None  # only blank lines so far: decide later

    def _slow_parse(self, numbered: list[tuple[int, str]]) -> ParsedRows:
        """Row by row, to find and name the first bad line; the rows before it stand."""
        good: list[list[float]] = []
        for number, line in numbered:
            values, problem = self._row(line)
            if problem is not None:
                return self._fail(CsvRowError(number, problem), good)
            good.append(values)
        return ParsedRows(np.asarray(good, dtype=np.float64).reshape(-1, self.n_features))

    def _row(self, line: str) -> tuple[list[float], str | None]:
        if NOT_UTF8 in line:
            return [], "not UTF-8 text."
        fields = [f.strip().strip('"').strip() for f in line.split(",")]
        if len(fields) != self.n_features:
            return [], f"expected {self.n_features} comma-separated numbers, got {len(fields)}."
        values = []
        for column, field in enumerate(fields, start=1):
            try:
                value = float(field)
            except ValueError:
                return [], f"field {column} is not a number: {field[:40]!r}."
            if not np.isfinite(value):
                return [], f"field {column} must be a finite number, got {field!r}."
            values.append(value)
        return values, None

    def _fail(self, error: CsvRowError, good: list[list[float]] | None = None) -> ParsedRows:
        self._failed = True
        rows = np.asarray(good or [], dtype=np.float64).reshape(-1, self.n_features)
        return ParsedRows(rows, error)

    def _empty(self) -> np.ndarray:
        return np.empty((0, self.n_features), dtype=np.float64)


def _is_number(field: str) -> bool:
    try:
        float(field.strip())
    except ValueError:
        return False
    return True

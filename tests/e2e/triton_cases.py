"""How tritonclient asks each kind of model in model-repo (no mlserver imports here: the gRPC
client runs in a process of its own, see tritonclient_grpc.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(__file__).parents[1] / "data"
FEATURES = np.asarray(
    json.loads((DATA / "classifier_request.json").read_text())["inputs"][0]["data"],
    dtype=np.float64,
)
# What tritonclient adds for the server: priority, timeout (µs), sequence_id/_start/_end.
PROTOCOL_KWARGS: dict[str, Any] = {"priority": 1, "timeout": 30_000_000, "sequence_id": 5}


@dataclass(frozen=True)
class Case:
    """One kind of model: its input, an output to read, good and misspelled parameters, and
    the text the misspelling's refusal must hold."""

    input_name: str
    value: np.ndarray
    output: str
    parameters: dict[str, Any] = field(default_factory=dict)
    misspelled: dict[str, Any] = field(default_factory=dict)
    refusal: str = "unknown parameter"

    @property
    def datatype(self) -> str:
        return "BYTES" if self.value.dtype == np.object_ else "FP64"

    def check(self, out: np.ndarray | None) -> None:
        """The output arrived with the expected shape."""
        assert out is not None and out.size > 0
        if self.output == "label":
            assert out.shape == (len(FEATURES),)


CASES = {
    "mlserver_streaming.TextGenerator": Case(
        "prompt",
        np.array([b"ROMEO:\n"], dtype=np.object_),
        "text",
        {"max_tokens": 4, "seed": 1},
        {"max_tokenz": 4},
    ),
    "mlserver_streaming.StreamingClassifier": Case(
        "features", FEATURES, "label", {"chunk_size": 2}, {"chunk_sise": 2}
    ),
    "mlserver_streaming.ABRouter": Case(
        "features", FEATURES, "label", {"user_id": "alice"}, {"user_idd": "alice"}, "user_id"
    ),
    "mlserver_streaming.WordStreamModel": Case(
        "prompt", np.array([b"Hi there"], dtype=np.object_), "output", {}, {"delay": 0}
    ),
}


def served_models(repo: Path) -> list[tuple[str, str, str]]:
    """(name, version or "", implementation) of every model-settings.json in the repo."""
    out = []
    for path in sorted(repo.rglob("model-settings.json")):
        settings = json.loads(path.read_text())
        version = (settings.get("parameters") or {}).get("version") or ""
        out.append((settings["name"], version, settings["implementation"]))
    return out

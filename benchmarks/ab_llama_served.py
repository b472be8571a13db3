#!/usr/bin/env python
"""bench_llama_served.py with ours-llama from several source trees, interleaved in one run.

Each ``--tree NAME=PATH`` adds a server ``NAME`` beside every ours-llama case: the same
``mlserver start`` with ``PYTHONPATH=PATH``, so that tree's ``mlserver_streaming`` serves
(a ``git archive REV | tar -x -C PATH`` of another revision, or a copy of the working tree).
``--tree-extra NAME KEY=JSON`` gives that server more ``parameters.extra`` (e.g. the same
tree with another setting). Every other argument is bench_llama_served.py's; its rotation
interleaves all servers, and the per-repeat rows in the results file give paired ratios
between trees.

    mkdir -p /tmp/head && git archive HEAD | tar -x -C /tmp/head
    .venv/bin/python benchmarks/ab_llama_served.py --tree ours-head=/tmp/head \\
        --threads --servers ours-llama llama-server --name ab_llama_served
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_llama_served as bench  # noqa: E402


def main() -> None:
    trees: dict[str, str] = {}
    args = sys.argv[1:]
    while "--tree" in args:
        i = args.index("--tree")
        name, path = args[i + 1].split("=", 1)
        trees[name] = str(Path(path).resolve())
        del args[i : i + 2]
    while "--tree-extra" in args:  # NAME KEY=JSON: that server's parameters.extra
        i = args.index("--tree-extra")
        key, value = bench.key_json(args[i + 2])
        bench.SERVER_EXTRA.setdefault(args[i + 1], {})[key] = value
        del args[i : i + 3]
    cases, ours = bench.cases, bench.ours

    def with_trees(models: list[str], threads: list[int]) -> dict[str, list[bench.Case]]:
        groups = cases(models, threads)
        for group in groups.values():
            group += [
                replace(c, server=n) for c in list(group) if c.server == "ours-llama" for n in trees
            ]
        return groups

    own = os.environ.get("PYTHONPATH")  # ours-llama and ours-numpy: the tree we run with

    def ours_from(case: bench.Case):  # type: ignore[no-untyped-def]
        path = trees.get(case.server, own)
        if path is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = path
        return ours(case)

    main_async, ratio_lines = bench.main_async, bench.ratio_lines

    async def main_with_trees(parsed):  # type: ignore[no-untyped-def]
        if parsed.servers:  # keep the trees' servers through bench's --servers filter
            parsed.servers = [*parsed.servers, *trees]
        return await main_async(parsed)

    def tree_ratios(rows: list[dict], threads: int) -> list[str]:
        """bench's lines, then each tree against llama-server and against ours-llama."""
        lines = ratio_lines(rows, threads)
        return (
            lines
            + ratio_lines(rows, threads, trees)
            + ratio_lines(rows, threads, trees, "ours-llama")
        )

    bench.cases, bench.ours = with_trees, ours_from
    bench.main_async, bench.ratio_lines = main_with_trees, tree_ratios
    sys.argv[1:] = args
    bench.main()


if __name__ == "__main__":
    main()

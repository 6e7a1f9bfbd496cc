"""How long the command line takes to answer before it does any work: ``--help`` and one-line errors.

Each command is a fresh process, run in interleaved rounds; ``import torch`` is measured beside them
because building the parser used to load PyTorch (4 s idle, 8–10 s under load, one-line errors
27–70 s), and the ratio to it shows what is left.

    .venv/bin/python benchmarks/cli_startup.py --out docs/benchmarks/cli.md
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from _common import cpu_name, emit

BIN = Path(sys.executable).parent


def _commands(tmp: Path) -> dict[str, list[str]]:
    attnloop = str(BIN / "attnloop")
    return {
        "`attnloop --help`": [attnloop, "--help"],
        "`attnloop train --help`": [attnloop, "train", "--help"],
        "`attnloop score --store <typo>` (one-line error)": [attnloop, "score", "--store", str(tmp / "typo")],
        "`attnloop ls push` with Label Studio on a closed port (one-line error)": [attnloop, "ls", "push", "--store", str(tmp)],
        "`python -c 'import torch'` (what the parser used to load)": [sys.executable, "-c", "import torch"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = {"ATTNLOOP_HOME": tmp, "ATTNLOOP_LABEL_STUDIO_URL": "http://127.0.0.1:9", "ATTNLOOP_LABEL_STUDIO_TOKEN": "x" * 40,
               "PATH": f"{BIN}:/usr/bin:/bin"}
        commands = _commands(Path(tmp))
        for _ in range(args.rounds):
            for name, argv in commands.items():
                start = time.perf_counter()
                subprocess.run(argv, env=env, capture_output=True)
                times.setdefault(name, []).append(time.perf_counter() - start)
    torch_key = next(k for k in commands if "import torch" in k)
    reference = statistics.median(times[torch_key])
    lines = [
        "# The command line's start",
        "",
        "```",
        f".venv/bin/python benchmarks/cli_startup.py --rounds {args.rounds} --out docs/benchmarks/cli.md",
        "```",
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {cpu_name()}, Python {sys.version.split()[0]}; each command a "
        f"fresh process, {args.rounds} interleaved rounds, wall time from start to exit. The parser imports no heavy library "
        "(`tests/test_cli.py::test_the_parser_loads_no_heavy_library`); before, it imported PyTorch for every command, `--help` included. "
        "A command loads what it uses and no more: the `ls` commands load Label Studio's SDK (which brings pandas), so their "
        "one-line error costs about what importing PyTorch does.",
        "",
        "| command | median | fastest | slowest | ratio to `import torch` |",
        "|---|---|---|---|---|",
    ]
    for name, values in times.items():
        median = statistics.median(values)
        lines.append(f"| {name} | {median:.2f} s | {min(values):.2f} s | {max(values):.2f} s | {median / reference:.2f} |")
    lines.append("")
    return emit("\n".join(lines), args.out)


if __name__ == "__main__":
    sys.exit(main())

"""Line tables decoded as each interpreter decodes its own: both ends of every line range
of every code object of json.decoder and json.encoder, under every CPython 3.6+ on the
machine (co_lnotab, 3.10's co_linetable, the 3.11+ location table)."""

import json
import subprocess
from pathlib import Path

import pytest

from podflame.agent.cpython.layouts import TABLE, LineTable
from podflame.agent.cpython.linetable import line_for
from tests.agent.pythons import interpreters

PYTHONS = interpreters()
SCRIPT = Path(__file__).parent.parent / "fixtures" / "python" / "linetables.py"


@pytest.mark.skipif(not PYTHONS, reason="no CPython 3.6+ on this machine")
@pytest.mark.parametrize(("label", "python"), PYTHONS, ids=[label for label, _ in PYTHONS])
def test_lines_are_the_interpreters_own(label: str, python: Path) -> None:
    dump = subprocess.run([str(python), str(SCRIPT)], capture_output=True, text=True, check=True)
    result = json.loads(dump.stdout)
    version = (3, result["minor"])
    kind = TABLE[version].line_table if version in TABLE else LineTable.LOCATIONS
    checked = 0
    for table, first, ranges in result["codes"]:
        raw = bytes.fromhex(table)
        for start, end, line in ranges:
            for offset in {start, end - 2}:  # both ends of the range
                assert line_for(kind, raw, first, offset) == line, (label, offset)
                checked += 1
    assert checked > 200


@pytest.mark.parametrize("kind", list(LineTable))
def test_garbage_tables_answer_without_raising(kind: LineTable) -> None:
    """Tables from memory we do not trust: any bytes give an int or None."""
    for seed in range(200):
        table = bytes((seed * 7919 + i * 104729) % 256 for i in range(seed % 64))
        for offset in (0, 2, 50, 10_000):
            line = line_for(kind, table, 10, offset)
            assert line is None or isinstance(line, int)
    assert line_for(kind, b"", 10, 0) in (10, None)

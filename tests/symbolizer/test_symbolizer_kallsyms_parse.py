"""parse_kallsyms (one vectorized pass) against a per-line reference and odd input."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from podflame.symbolizer.kallsyms import parse_kallsyms
from podflame.symbolizer.symtab import SymbolTable

RANK = {"T": 0, "W": 1, "t": 2, "w": 3}


def reference(text: str) -> list[tuple[int, str]]:
    """(address, name) per address: text symbols, best rank, then file order."""
    entries = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[1] in RANK:
            entries.append((int(fields[0], 16), RANK[fields[1]], fields[2]))
    if not any(address for address, _, _ in entries):
        return []
    entries.sort(key=lambda e: (e[0], e[1]))
    table: dict[int, str] = {}
    for address, _, name in entries:
        table.setdefault(address, name)
    return list(table.items())


def contents(table: SymbolTable) -> list[tuple[int, str | None]]:
    starts = table.starts.tolist()
    return list(zip(starts, table.lookup_many(starts), strict=True))


def test_fixed_format_variants() -> None:
    text = (
        "ffffffff81000000 T _stext\n"
        "FFFFFFFF81000100 t upper_hex\n"  # upper-case digits
        "ffffffff81000200 t with_module\t[ext4]\n"
        "ffffffff81000300 t crlf\r\n"
        "ffffffff81000400 d data_is_skipped\n"
        "\n"
        "ffffffff81000500 W last_without_newline"
    )
    assert contents(parse_kallsyms(text.encode())) == [
        (0xFFFFFFFF81000000, "_stext"),
        (0xFFFFFFFF81000100, "upper_hex"),
        (0xFFFFFFFF81000200, "with_module"),
        (0xFFFFFFFF81000300, "crlf"),
        (0xFFFFFFFF81000500, "last_without_newline"),
    ]


def test_32_bit_addresses() -> None:
    text = b"c1000000 T start_32\nc1000040 t helper_32\n"
    table = parse_kallsyms(text)
    assert contents(table) == [(0xC1000000, "start_32"), (0xC1000040, "helper_32")]
    assert table.lookup(0xC1000041) == "helper_32"


@pytest.mark.parametrize(
    "line",
    [
        "ffffffff8100100 t short_address",
        "ffffffff8100100g t not_hex",
        " ffffffff81001000 t leading_space",
        "ffffffff81001000  t two_spaces",
        "ffffffff81001000 tt two_letters",
        "ffffffff81001000 t ",
        "ffffffff81001000 t",
        "ffffffff81001000",
    ],
)
def test_malformed_line_is_skipped(line: str) -> None:
    text = f"ffffffff81000000 T _stext\n{line}\nffffffff81002000 t after\n"
    assert contents(parse_kallsyms(text.encode())) == [
        (0xFFFFFFFF81000000, "_stext"),
        (0xFFFFFFFF81002000, "after"),
    ]


def test_empty_and_hidden() -> None:
    assert len(parse_kallsyms(b"")) == 0
    assert len(parse_kallsyms(b"no spaces at all\n")) == 0
    hidden = b"0000000000000000 T _stext\n0000000000000000 t helper\n"
    assert len(parse_kallsyms(hidden)) == 0


def test_random_damage_gives_only_names_from_the_input() -> None:
    rng = random.Random(3)
    lines = [f"ffffffff81{i:06x} {rng.choice('TtWwDb')} name_{i}" for i in range(0, 4000, 4)]
    original = "\n".join(lines).encode()
    for _ in range(100):
        data = bytearray(original)
        for _ in range(rng.randrange(1, 40)):
            at = rng.randrange(len(data))
            data[at : at + rng.randrange(1, 4)] = rng.randbytes(rng.randrange(0, 4))
        table = parse_kallsyms(bytes(data))
        text = bytes(data).decode(errors="backslashreplace")
        for _, name in contents(table):
            assert name and name in text


def test_well_formed_lines_match_the_reference_in_any_order() -> None:
    rng = random.Random(11)
    lines = []
    for i in range(3000):
        address = 0xFFFFFFFF81000000 + rng.randrange(400) * 16
        tag = rng.choice(["", "\t[mod_a]", "\t[mod_b]"])
        lines.append(f"{address:016x} {rng.choice('TtWwDdbBrR')} sym_{i}{tag}")
    text = "\n".join(lines) + "\n"
    assert contents(parse_kallsyms(text.encode())) == reference(text)


def test_real_kallsyms_matches_the_reference() -> None:
    path = Path("/proc/kallsyms")
    if not path.exists():
        pytest.skip("no /proc/kallsyms")
    data = path.read_bytes()
    expected = reference(data.decode(errors="backslashreplace"))
    if not expected:
        pytest.skip("kallsyms addresses are hidden (kptr_restrict)")
    assert contents(parse_kallsyms(data)) == expected

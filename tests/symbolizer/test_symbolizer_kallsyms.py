"""KernelSymbols on synthetic kallsyms files and on the running kernel's."""

from __future__ import annotations

from pathlib import Path

import pytest

from podflame.symbolizer import KernelSymbols, Symbolizer

SYNTHETIC = """\
ffffffff81000000 T _stext
ffffffff81000000 t local_alias_of_stext
ffffffff81000100 T do_sys_openat2
ffffffff81000400 t static_helper
ffffffff81000500 W weak_func
ffffffff81000600 w weak_local
ffffffff81000700 D some_data
ffffffff81000800 b some_bss
0000000000000000 A fixed_percpu_data
ffffffffc0002000 t mod_exit\t[mymod]
ffffffffc0001000 t mod_init\t[mymod]
ffffffffc0003000 T mod_exported\t[othermod]
"""

MODULES = (
    "mymod 16384 0 - Live 0xffffffffc0001000\nothermod 8192 1 mymod, Live 0xffffffffc0003000\n"
)


def write(tmp_path: Path, kallsyms: str, modules: str = MODULES) -> KernelSymbols:
    (tmp_path / "kallsyms").write_text(kallsyms)
    (tmp_path / "modules").write_text(modules)
    return KernelSymbols(tmp_path / "kallsyms", tmp_path / "modules")


def test_synthetic_text_symbols_and_modules(tmp_path: Path) -> None:
    symbols = write(tmp_path, SYNTHETIC)

    assert len(symbols) == 8  # 9 text lines, two of them one address
    assert symbols.lookup(0xFFFFFFFF81000000) == "_stext"  # global beats local alias
    assert symbols.lookup(0xFFFFFFFF81000150) == "do_sys_openat2"
    assert symbols.lookup(0xFFFFFFFF81000400) == "static_helper"
    assert symbols.lookup(0xFFFFFFFF81000501) == "weak_func"
    assert symbols.lookup(0xFFFFFFFF81000600) == "weak_local"
    assert symbols.lookup(0xFFFFFFFFC0001010) == "mod_init"  # out-of-order lines sorted
    assert symbols.lookup(0xFFFFFFFFC0002000) == "mod_exit"
    assert symbols.lookup(0xFFFFFFFFC0003004) == "mod_exported"
    assert symbols.lookup(0xFFFFFFFF80FFFFFF) is None
    assert symbols.lookup(0x7F0000001000) is None  # a user address


def test_all_zero_addresses_resolve_nothing(tmp_path: Path) -> None:
    hidden = "\n".join(
        "0000000000000000 " + line.split(" ", 1)[1] for line in SYNTHETIC.splitlines()
    )
    symbols = write(tmp_path, hidden)

    assert len(symbols) == 0
    assert symbols.lookup(0xFFFFFFFF81000150) is None
    assert symbols.lookup(0) is None


def test_refresh_reloads_only_when_modules_change(tmp_path: Path) -> None:
    symbols = write(tmp_path, SYNTHETIC)
    (tmp_path / "kallsyms").write_text(SYNTHETIC + "ffffffffc0004000 t new_func\t[newmod]\n")

    # Reference counts and states change all the time: not a reload.
    (tmp_path / "modules").write_text(MODULES.replace("16384 0 -", "16384 3 othermod,"))
    assert symbols.refresh() is False
    assert symbols.lookup(0xFFFFFFFFC0004000) == "mod_exported"  # the old table

    (tmp_path / "modules").write_text(MODULES + "newmod 4096 0 - Live 0xffffffffc0004000\n")
    assert symbols.refresh() is True
    assert symbols.lookup(0xFFFFFFFFC0004000) == "new_func"
    assert symbols.refresh() is False
    assert symbols.reloads == 1


def test_symbolizer_kernel_frames(tmp_path: Path) -> None:
    symbolizer = Symbolizer(kallsyms=write(tmp_path, SYNTHETIC))

    names = symbolizer.kernel([0xFFFFFFFF81000104, 0x1000, 0xFFFFFFFFC0001000])

    assert names == ["do_sys_openat2", "[unknown]", "mod_init"]
    assert (symbolizer.stats.frames_resolved, symbolizer.stats.frames_unresolved) == (2, 1)


def test_symbolizer_without_kallsyms_gives_unknown(tmp_path: Path) -> None:
    symbolizer = Symbolizer(proc=tmp_path)  # a "procfs" with no kallsyms
    assert symbolizer.kernel([0xFFFFFFFF81000000]) == ["[unknown]"]


@pytest.fixture(scope="module")
def real_kallsyms() -> list[tuple[int, str, str]]:
    path = Path("/proc/kallsyms")
    if not path.exists():
        pytest.skip("no /proc/kallsyms")
    entries = []
    for line in path.read_text().splitlines():
        fields = line.split()
        entries.append((int(fields[0], 16), fields[1], fields[2]))
    if not any(address for address, _, _ in entries):
        pytest.skip("kallsyms addresses are hidden (kptr_restrict)")
    return entries


def test_real_kallsyms_resolves_global_text_symbols_to_themselves(
    real_kallsyms: list[tuple[int, str, str]],
) -> None:
    symbols = KernelSymbols()
    addresses = sorted({address for address, _, _ in real_kallsyms})
    following = dict(zip(addresses, [*addresses[1:], 1 << 64], strict=True))
    count: dict[int, int] = {}
    for address, _, _ in real_kallsyms:
        count[address] = count.get(address, 0) + 1
    # Global text symbols alone at their address: their name is the only right answer.
    unique = [(a, n) for a, kind, n in real_kallsyms if kind == "T" and count[a] == 1]
    assert len(unique) > 1000

    for address, name in unique[:: max(1, len(unique) // 2000)]:
        assert symbols.lookup(address) == name
        if following[address] > address + 1:
            assert symbols.lookup(address + 1) == name
    wanted = [a for a, kind, n in real_kallsyms if n == "do_sys_openat2" and count[a] == 1]
    if wanted:
        assert Symbolizer(kallsyms=symbols).kernel([wanted[0] + 4]) == ["do_sys_openat2"]

"""The CPython interpreters this machine has, found at test time, and the target program."""

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TARGET = Path(__file__).parent.parent / "fixtures" / "python" / "target.py"
_VERSION_DIR = re.compile(r"^3\.(\d+)\.\d+$")


def _pyenv_root() -> Path | None:
    if shutil.which("pyenv"):
        out = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=False)
        if out.returncode == 0 and out.stdout.strip():
            return Path(out.stdout.strip())
    default = Path.home() / ".pyenv"
    return default if default.is_dir() else None


def interpreters(first_minor: int = 6) -> list[tuple[str, Path]]:
    """(label, path) of each CPython 3.x found: pyenv's versions and /usr/bin/python3.N."""
    found: dict[Path, str] = {}
    root = _pyenv_root()
    if root is not None and (root / "versions").is_dir():
        for folder in sorted((root / "versions").iterdir()):
            match = _VERSION_DIR.match(folder.name)
            exe = folder / "bin" / "python3"
            if match and int(match[1]) >= first_minor and exe.exists():
                found.setdefault(exe.resolve(), f"pyenv-{folder.name}")
    for exe in sorted(Path("/usr/bin").glob("python3.*")):
        match = re.fullmatch(r"python3\.(\d+)", exe.name)
        if match and int(match[1]) >= first_minor:
            found.setdefault(exe.resolve(), f"system-{exe.name}")
    return sorted(((label, path) for path, label in found.items()), key=lambda x: x[0])


def wait_sleeping(pid: int, timeout: float = 10.0) -> None:
    """Until the process's only running thread blocks (state S): its stack stands still."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "S":
            return
        time.sleep(0.005)
    raise AssertionError(f"process {pid} never blocked")


@contextmanager
def target(
    python: Path, mode: str, *args: str
) -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    """The target program running in `mode`, and what it printed about itself."""
    process = subprocess.Popen(
        [str(python), str(TARGET), mode, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    try:
        assert process.stdout is not None
        report = json.loads(process.stdout.readline())
        yield process, report
    finally:
        process.kill()
        process.wait()

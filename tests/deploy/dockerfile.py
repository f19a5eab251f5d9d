"""Reads a Dockerfile's instructions, for static checks where no Docker can build it."""

import json
import shlex
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, COPY, ENV, ...
    arguments: str  # the rest, continuation lines joined


@dataclass(frozen=True)
class Copy:
    sources: tuple[str, ...]
    destination: str
    from_stage: str | None


def instructions(path: Path) -> list[Instruction]:
    found: list[Instruction] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        found.append(Instruction(keyword.upper(), " ".join(arguments.split())))
        pending = ""
    if pending:
        raise ValueError(f"{path}: the last instruction ends with a continuation")
    return found


def copies(path: Path) -> list[Copy]:
    result = []
    for instruction in instructions(path):
        if instruction.keyword != "COPY":
            continue
        words = shlex.split(instruction.arguments)
        options = [word for word in words if word.startswith("--")]
        paths = [word for word in words if not word.startswith("--")]
        stage = next((o.split("=", 1)[1] for o in options if o.startswith("--from=")), None)
        result.append(Copy(tuple(paths[:-1]), paths[-1], stage))
    return result


def exec_form(path: Path, keyword: str) -> list[str]:
    """ENTRYPOINT or CMD of the final stage, which must be in JSON (exec) form."""
    found = [i for i in instructions(path) if i.keyword == keyword]
    if not found:
        return []
    value = json.loads(found[-1].arguments)
    if not (isinstance(value, list) and all(isinstance(item, str) for item in value)):
        raise ValueError(f"{path}: {keyword} is not in exec form")
    return value


def environment(path: Path) -> dict[str, str]:
    """ENV of the final stage (KEY=VALUE pairs; later ones win)."""
    instructions_ = instructions(path)
    start = max(i for i, item in enumerate(instructions_) if item.keyword == "FROM")
    variables: dict[str, str] = {}
    for instruction in instructions_[start:]:
        if instruction.keyword == "ENV":
            for pair in shlex.split(instruction.arguments):
                key, _, value = pair.partition("=")
                variables[key] = value
    return variables

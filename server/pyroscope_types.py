"""podflame profile types under the IDs Pyroscope gives them, in one place.

A Pyroscope profile type ID is `name:sample_type:sample_unit:period_type:period_unit`.
The built-in eBPF types are `cpu:cpu:nanoseconds:cpu:nanoseconds` and the like. A type
recorded from a Pyroscope push is stored under a podflame name (`process_cpu_samples`),
and its description, written here when it is recorded, keeps the `__name__` and pprof
sample type it was pushed with, so the ID it came with can be given back: the
descriptions below are written and read only by this module.
"""

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from podflame.model.profile import BUILTIN_PROFILE_TYPES, ProfileType

_PUSHED = re.compile(r"(\w+) pushed by Pyroscope SDKs \(pprof sample type (.+?)\)(?:, in .+)?")
_LEGACY = re.compile(r"(\w+) sent to the legacy Pyroscope /ingest(?:, in .+)?")


class UnknownTypeId(ValueError):
    """A profile type ID (or name) naming no known type."""


def pushed_description(name: str, sample_type: str) -> str:
    """The description of a type recorded from a pprof push's `name` profile."""
    return f"{name} pushed by Pyroscope SDKs (pprof sample type {sample_type})"


def legacy_description(name: str) -> str:
    """The description of a type recorded from the legacy /ingest."""
    return f"{name} sent to the legacy Pyroscope /ingest"


def in_unit_description(description: str, unit: str) -> str:
    """The description of a type stored under a unit-qualified name (`<name>_<unit>`)."""
    return f"{description}, in {unit}"


@dataclass(frozen=True)
class TypeId:
    """A profile type as Pyroscope names it, and the podflame type it stands for."""

    podflame_name: str
    name: str
    sample_type: str
    sample_unit: str
    period_type: str
    period_unit: str

    @property
    def id(self) -> str:
        parts = (self.name, self.sample_type, self.sample_unit, self.period_type)
        return ":".join((*parts, self.period_unit))

    def matches(self, text: str) -> bool:
        """Whether `text` names this type: its ID (the first three parts decide, so an
        ID with another period still matches) or its podflame name."""
        parts = text.split(":")
        if len(parts) == 5 and parts[:3] == [self.name, self.sample_type, self.sample_unit]:
            return True
        return text in (self.id, self.podflame_name)


def type_id(profile_type: ProfileType) -> TypeId:
    """The Pyroscope ID of a podflame type.

    eBPF types: `cpu:cpu:nanoseconds:cpu:nanoseconds`, `net_wait:net_wait:...`. Pushed
    types get back the __name__ and sample type they were pushed with
    (`process_cpu:samples:count:samples:count` for podflame's `process_cpu_samples`).
    """
    name = sample = profile_type.name
    if profile_type.name not in BUILTIN_PROFILE_TYPES:
        if pushed := _PUSHED.fullmatch(profile_type.description):
            name, sample = pushed.groups()
        elif legacy := _LEGACY.fullmatch(profile_type.description):
            name = legacy.group(1)
            sample = "cpu" if profile_type.unit == "nanoseconds" else name
    unit = profile_type.unit
    return TypeId(profile_type.name, name, sample, unit, sample, unit)


def type_ids(types: Iterable[ProfileType]) -> list[TypeId]:
    """One ID per type, in order; a later type whose ID is taken already is left out."""
    seen: dict[str, TypeId] = {}
    for profile_type in types:
        found = type_id(profile_type)
        seen.setdefault(found.id, found)
    return list(seen.values())


def resolve_type(text: str, known: Sequence[TypeId]) -> str:
    """The podflame type named by a Pyroscope ID or a podflame type name."""
    for candidate in known:
        if candidate.matches(text):
            return candidate.podflame_name
    raise UnknownTypeId(f"unknown profile type {text!r} (see ProfileTypes)")

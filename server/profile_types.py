"""Which profile types exist: the built-ins plus those recorded in the store at ingest.

`ProfileTypes` is the app's registry (one per app, made by `create_app` and handed to
routers through `deps.Types`): what ingest and queries check names against. It keeps
in step with its store, so a type pushed by a Pyroscope SDK can be queried, also after
a restart or when another server instance recorded it.
"""

import re
import threading
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from fastapi import HTTPException

from podflame.model.profile import (
    BUILTIN_PROFILE_TYPES,
    TYPE_NAME,
    ProfileType,
    ProfileTypeConflict,
)
from podflame.server.pyroscope_types import (
    TypeId,
    UnknownTypeId,
    in_unit_description,
    resolve_type,
    type_ids,
)
from podflame.server.store import ProfileTypeStore


class TooManyProfileTypes(ProfileTypeConflict):
    """Recording the push's types would take the store past --max-profile-types."""


class ProfileTypes:
    """The types one app knows: the built-ins, and those its store holds."""

    def __init__(self, store: ProfileTypeStore) -> None:
        self._store = store
        self._known: dict[str, ProfileType] = dict(BUILTIN_PROFILE_TYPES)
        # The runtime names known recorded in the store: ingest then skips the round trip.
        self._recorded: set[str] = set()
        # Ingest and queries run in worker threads; checking then recording is one step.
        self._lock = threading.RLock()

    def known(self) -> list[ProfileType]:
        """The types this app has seen so far (no store round trip)."""
        with self._lock:
            return list(self._known.values())

    def get(self, name: str) -> ProfileType | None:
        """The type of that name, asking the store on a miss."""
        with self._lock:
            if name not in self._known:
                self._load()
            return self._known.get(name)

    def all(self) -> list[ProfileType]:
        """Built-in types first, then the recorded ones by name (asks the store)."""
        with self._lock:
            stored = [item for item in self._load() if item.name not in BUILTIN_PROFILE_TYPES]
        return [*BUILTIN_PROFILE_TYPES.values(), *stored]

    def type_ids(self) -> list[TypeId]:
        """The Pyroscope ID of every type this app has seen (no store round trip)."""
        return type_ids(self.known())

    def resolve_type_id(self, text: str) -> str:
        """The name of the type a Pyroscope ID (or a podflame name) stands for, asking the
        store on a miss; UnknownTypeId if none."""
        try:
            return resolve_type(text, self.type_ids())
        except UnknownTypeId:
            # Pushed to another server instance, or before a restart: ask the store.
            return resolve_type(text, type_ids(self.all()))

    def require(self, name: str, *, list_known: bool = True) -> ProfileType:
        """The type `name`, else a 400.

        The 400 lists the known types unless `list_known` is False (for a caller limited
        to some namespaces, who is shown only the types with samples there).
        """
        found = self.get(name)
        if found is not None:
            return found
        if not list_known:
            raise HTTPException(400, f"unknown profile type {name!r} (see /api/v1/profile-types)")
        known = ", ".join(sorted(item.name for item in self.known()))
        raise HTTPException(400, f"unknown profile type {name!r} (known: {known})")

    def record(self, pushed: Sequence[ProfileType], max_types: int) -> dict[tuple[str, str], str]:
        """Record the pushed types; for each (name, unit) pushed, the type name to store it
        under.

        A type is a name and a unit: values of different units are never summed. A name is
        stored in the first unit recorded for it (the standard names only in SDK_UNITS); a
        push of it in another unit is stored under `<name>_<unit>`, never breaking the
        others. Everything is checked before anything is recorded: ProfileTypeConflict for
        a reserved or invalid name, TooManyProfileTypes past `max_types` recorded types.
        """
        with self._lock:
            if all(self._known_as_is(item) for item in pushed):
                return {(item.name, item.unit): item.name for item in pushed}  # no round trip
            stored = {item.name: item for item in self._store.profile_types()}
            resolved = _plan(pushed, stored)
            new = {t.name: t for t in resolved.values() if t.name not in stored}
            if new and len(stored) + len(new) > max_types:
                raise TooManyProfileTypes(
                    f"recording profile type {next(iter(new))!r} would make more than"
                    f" {max_types} profile types (--max-profile-types,"
                    " PODFLAME_MAX_PROFILE_TYPES)"
                )
            if new:
                # Another server may have recorded a name meanwhile: the first unit wins.
                added = self._store.profile_types(list(new.values()))
                stored = {item.name: item for item in added}
            for item in resolved.values():
                _check_unit(stored[item.name], item)
                self._remember(stored[item.name])
            return {key: item.name for key, item in resolved.items()}

    def _load(self) -> list[ProfileType]:
        stored = self._store.profile_types()
        for profile_type in stored:
            if profile_type.name not in BUILTIN_PROFILE_TYPES:
                self._remember(profile_type)
        return stored

    def _remember(self, profile_type: ProfileType) -> None:
        _check_name(profile_type.name)
        self._known[profile_type.name] = profile_type
        self._recorded.add(profile_type.name)

    def _known_as_is(self, pushed: ProfileType) -> bool:
        """Whether `pushed` is a type this app knows recorded, in the same unit."""
        current = self._known.get(pushed.name)
        return pushed.name in self._recorded and current is not None and current.unit == pushed.unit


def _plan(
    pushed: Sequence[ProfileType], stored: Mapping[str, ProfileType]
) -> dict[tuple[str, str], ProfileType]:
    """The type each pushed (name, unit) is stored as; a type this push records counts as
    recorded for its later ones."""
    planned = dict(stored)
    resolved: dict[tuple[str, str], ProfileType] = {}
    for item in pushed:
        if (item.name, item.unit) not in resolved:
            target = _resolve(item, planned)
            resolved[item.name, item.unit] = target
            planned.setdefault(target.name, target)
    return resolved


# The units Pyroscope SDKs push their standard types in. A push of one of these names
# in another unit goes to a unit-qualified name even when the bare one is free: no
# one can take `process_cpu` first in bytes and push every SDK's CPU profiles aside.
SDK_UNITS: Mapping[str, str] = MappingProxyType(
    {"process_cpu": "nanoseconds", "wall": "nanoseconds", "memory": "bytes"}
)
_UNIT_CHARS = re.compile(r"[^A-Za-z0-9_]")
_MAX_UNIT_IN_NAME = 64


def _resolve(pushed: ProfileType, stored: Mapping[str, ProfileType]) -> ProfileType:
    """The type `pushed` is stored as: itself, or its unit-qualified variant.

    A recorded name keeps its unit, since its stored samples are in it (also a row an
    older server let someone record in a wrong unit: delete that row to free the name).
    """
    _check_name(pushed.name)
    recorded = stored.get(pushed.name)
    expected = recorded.unit if recorded else SDK_UNITS.get(pushed.name, pushed.unit)
    if pushed.unit == expected:
        return pushed
    unit_part = _UNIT_CHARS.sub("_", pushed.unit)[:_MAX_UNIT_IN_NAME] or "none"
    qualified = ProfileType(
        f"{pushed.name}_{unit_part}",
        pushed.unit,
        in_unit_description(pushed.description, pushed.unit),
    )
    _check_name(qualified.name)
    existing = stored.get(qualified.name)
    if existing is not None:
        _check_unit(existing, qualified)
    return qualified


def _check_name(name: str) -> None:
    if not TYPE_NAME.fullmatch(name):
        raise ProfileTypeConflict(f"invalid profile type name {name!r}")
    if name in BUILTIN_PROFILE_TYPES:
        raise ProfileTypeConflict(f"profile type {name!r} is reserved")


def _check_unit(existing: ProfileType, new: ProfileType) -> None:
    if existing.unit != new.unit:
        raise ProfileTypeConflict(
            f"profile type {new.name!r} is stored in {existing.unit!r}, not {new.unit!r}"
        )

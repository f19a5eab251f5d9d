"""Which profile types exist: the built-ins plus those recorded in the store at ingest.

The process-wide registry (`podflame.model.profile.PROFILE_TYPES`) is what
ingest and queries check names against; this module keeps it in step with the
store, so a type pushed by a Pyroscope SDK can be queried, also after a restart
or when another server instance recorded it.
"""

import re
import threading
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from weakref import WeakKeyDictionary

from fastapi import HTTPException

from podflame.model.profile import (
    BUILTIN_PROFILE_TYPES,
    PROFILE_TYPES,
    TYPE_NAME,
    ProfileType,
    ProfileTypeConflict,
    register_profile_type,
)
from podflame.server.store import ProfileStore

# Per store, the names this process knows are recorded in it: ingest then
# skips the store round trip. Weak, so a closed store (a test's) is forgotten.
_recorded: "WeakKeyDictionary[ProfileStore, set[str]]" = WeakKeyDictionary()
# Ingest and queries run in worker threads; checking then recording a type is one step.
_lock = threading.RLock()


def stored_profile_types(store: ProfileStore) -> list[ProfileType]:
    """The runtime types recorded in the store, now also in the registry."""
    with _lock:
        return _load(store)


def _load(store: ProfileStore) -> list[ProfileType]:
    stored = store.profile_types()
    known = _recorded.setdefault(store, set())
    for profile_type in stored:
        if profile_type.name not in BUILTIN_PROFILE_TYPES:
            register_profile_type(profile_type)
            known.add(profile_type.name)
    return stored


def all_profile_types(store: ProfileStore) -> list[ProfileType]:
    """Built-in types first, then the recorded ones by name."""
    stored = [
        item for item in stored_profile_types(store) if item.name not in BUILTIN_PROFILE_TYPES
    ]
    return [*BUILTIN_PROFILE_TYPES.values(), *stored]


def require_profile_type(store: ProfileStore, name: str, *, list_known: bool = True) -> str:
    """`name` if it is a known type (asking the store on a miss), else a 400.

    The 400 lists the known types unless `list_known` is False (for a caller limited
    to some namespaces, who is shown only the types with samples there).
    """
    if name not in PROFILE_TYPES:
        stored_profile_types(store)
    if name not in PROFILE_TYPES:
        if not list_known:
            raise HTTPException(400, f"unknown profile type {name!r} (see /api/v1/profile-types)")
        known = ", ".join(sorted(PROFILE_TYPES))
        raise HTTPException(400, f"unknown profile type {name!r} (known: {known})")
    return name


# The units Pyroscope SDKs push their standard types in. A push of one of these names
# in another unit goes to a unit-qualified name even when the bare one is free: no
# one can take `process_cpu` first in bytes and push every SDK's CPU profiles aside.
SDK_UNITS: Mapping[str, str] = MappingProxyType(
    {"process_cpu": "nanoseconds", "wall": "nanoseconds", "memory": "bytes"}
)
_UNIT_CHARS = re.compile(r"[^A-Za-z0-9_]")
_MAX_UNIT_IN_NAME = 64


class TooManyProfileTypes(ProfileTypeConflict):
    """Recording the push's types would take the store past --max-profile-types."""


def record_profile_types(
    store: ProfileStore, pushed: Sequence[ProfileType], max_types: int
) -> dict[tuple[str, str], str]:
    """Record the pushed types; for each (name, unit) pushed, the type name to store it under.

    A type is a name and a unit: values of different units are never summed. A name is
    stored in the first unit recorded for it (the standard names only in SDK_UNITS); a
    push of it in another unit is stored under `<name>_<unit>`, never breaking the others.
    Everything is checked before anything is recorded: ProfileTypeConflict for a reserved
    or invalid name, TooManyProfileTypes past `max_types` recorded types.
    """
    with _lock:
        known = _recorded.setdefault(store, set())
        if all(_known_as_is(item, known) for item in pushed):
            return {(item.name, item.unit): item.name for item in pushed}  # no round trip
        stored = {item.name: item for item in store.profile_types()}
        # The types this push records count as recorded for its later ones.
        planned = dict(stored)
        resolved: dict[tuple[str, str], ProfileType] = {}
        for item in pushed:
            if (item.name, item.unit) not in resolved:
                target = _resolve(item, planned)
                resolved[item.name, item.unit] = target
                planned.setdefault(target.name, target)
        new = {name: item for name, item in planned.items() if name not in stored}
        if new and len(stored) + len(new) > max_types:
            raise TooManyProfileTypes(
                f"recording profile type {next(iter(new))!r} would make more than"
                f" {max_types} profile types (--max-profile-types, PODFLAME_MAX_PROFILE_TYPES)"
            )
        if new:
            # Another server may have recorded a name meanwhile: the first unit wins.
            stored = {item.name: item for item in store.profile_types(list(new.values()))}
        for item in resolved.values():
            _check_unit(stored[item.name], item)
            register_profile_type(stored[item.name])
            known.add(item.name)
        return {key: item.name for key, item in resolved.items()}


def _known_as_is(pushed: ProfileType, known: set[str]) -> bool:
    """Whether `pushed` is a type this process knows recorded, in the same unit."""
    current = PROFILE_TYPES.get(pushed.name)
    return pushed.name in known and current is not None and current.unit == pushed.unit


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
        f"{pushed.name}_{unit_part}", pushed.unit, f"{pushed.description}, in {pushed.unit}"
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

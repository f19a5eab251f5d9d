"""Which profile types exist: the built-ins plus those recorded in the store at ingest.

The process-wide registry (`podflame.model.profile.PROFILE_TYPES`) is what
ingest and queries check names against; this module keeps it in step with the
store, so a type pushed by a Pyroscope SDK can be queried, also after a restart
or when another server instance recorded it.
"""

import threading
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


def check_profile_type(store: ProfileStore, profile_type: ProfileType) -> None:
    """Raise ProfileTypeConflict where `record_profile_type` would, recording nothing.

    So that an upload of several types is refused before any of them is recorded.
    """
    with _lock:
        if not TYPE_NAME.fullmatch(profile_type.name):
            raise ProfileTypeConflict(f"invalid profile type name {profile_type.name!r}")
        if profile_type.name in BUILTIN_PROFILE_TYPES:
            raise ProfileTypeConflict(f"profile type {profile_type.name!r} is reserved")
        current = PROFILE_TYPES.get(profile_type.name)
        if current is None:
            current = {item.name: item for item in store.profile_types()}.get(profile_type.name)
        if current is not None:
            _check_unit(current, profile_type)


def record_profile_type(store: ProfileStore, profile_type: ProfileType) -> None:
    """Make an ingested runtime type known, in the store and here, before its samples go in.

    Raises ProfileTypeConflict for a built-in name or a name stored with another unit:
    values of different units must never be summed together.
    """
    with _lock:
        _record(store, profile_type)


def _record(store: ProfileStore, profile_type: ProfileType) -> None:
    known = _recorded.setdefault(store, set())
    current = PROFILE_TYPES.get(profile_type.name)
    if profile_type.name in known and current is not None:
        _check_unit(current, profile_type)
        return
    if profile_type.name in BUILTIN_PROFILE_TYPES:
        raise ProfileTypeConflict(f"profile type {profile_type.name!r} is reserved")
    stored = {item.name: item for item in store.profile_types()}
    existing = stored.get(profile_type.name)
    if existing is None:
        # Another server may have recorded the name meanwhile: the first unit wins.
        recorded = {item.name: item for item in store.profile_types([profile_type])}
        existing = recorded.get(profile_type.name, profile_type)
    _check_unit(existing, profile_type)
    register_profile_type(existing)
    known.add(profile_type.name)


def _check_unit(existing: ProfileType, new: ProfileType) -> None:
    if existing.unit != new.unit:
        raise ProfileTypeConflict(
            f"profile type {new.name!r} is stored in {existing.unit!r}, not {new.unit!r}"
        )

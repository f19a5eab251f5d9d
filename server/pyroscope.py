"""Pyroscope uploads (Connect Push and the legacy /ingest) turned into podflame batches.

A pushed pprof becomes one Batch per sample type. The type is named after the
series' `__name__` label (`process_cpu`); a profile with several sample types
names its default one so and the others `<__name__>_<sample type>`. Labels keep
their names where podflame allows them and are sanitized otherwise
(`otel.scope.name` -> `otel_scope_name`); `__*__` labels are Pyroscope's own and
are dropped. Batch ids hash the request body, so a retried push is stored once.
"""

import base64
import binascii
import hashlib
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from google.protobuf.message import DecodeError
from pydantic import AliasChoices, BaseModel, Field, ValidationError

from podflame.model import Batch, ProfileType
from podflame.model.pprof import (
    GZIP_MAGIC,
    DecodedProfile,
    PprofError,
    PprofLimitExceeded,
    PprofLimits,
    PprofTooLarge,
    expanded_frames,
    gunzip,
    stacks_from_profile,
)
from podflame.model.pprof import decode as decode_pprof
from podflame.model.profile import truncate_stack
from podflame.server import push_pb2
from podflame.server.limits import IngestLimits, check_expansion, pprof_limit_exceeded
from podflame.server.pyroscope_types import legacy_description, pushed_description

NAME_LABEL = "__name__"
SERVICE_LABEL = "service_name"
DEFAULT_SAMPLE_RATE = 100
_MAX_LABEL_NAME = 256
_MAX_TEXT = 4096  # the wire format's limit for frames and label values
# What the store can hold (server/rows.py): pids are UInt32, values Int64, times before 2100.
_MAX_PID = 2**32 - 1
_MAX_VALUE = 2**63 - 1
_MAX_TIME_NS = 4_102_444_800 * 10**9
_INVALID_LABEL_CHARS = re.compile(r"[^A-Za-z0-9_]")
# Per-sample pprof labels that name one request or span: a series each would
# only multiply rows, so they are left out.
_DROPPED_SAMPLE_LABELS = frozenset({"span_id", "span_name", "profile_id"})
# Legacy app names end in the kind of profile: `shop.cpu`, `shop.alloc_space`.
_LEGACY_SUFFIXES = frozenset(
    {
        "cpu",
        "itimer",
        "wall",
        "alloc_objects",
        "alloc_space",
        "inuse_objects",
        "inuse_space",
        "goroutines",
        "mutex_count",
        "mutex_duration",
        "block_count",
        "block_duration",
    }
)
_LEGACY_CPU = frozenset({"cpu", "itimer"})
_LEGACY_NAME = re.compile(r"([^{}]+)(?:\{([^{}]*)\})?")


class PushError(ValueError):
    """The upload is malformed or cannot be stored as asked (a 400)."""


@dataclass(frozen=True)
class RawSeries:
    """One series of a PushRequest: its labels and its raw (maybe gzipped) pprofs."""

    labels: list[tuple[str, str]]
    profiles: list[bytes]


@dataclass
class Converted:
    """Batches to store, each with the runtime type (name and unit) it needs recorded first.

    The batch's profile_type is the pushed name; the registry may store it under another
    (server/profile_types.py).
    """

    batches: list[tuple[ProfileType, Batch]] = field(default_factory=list)

    @property
    def types(self) -> list[ProfileType]:
        return [profile_type for profile_type, _ in self.batches]


# --- PushRequest ----------------------------------------------------------------------------


def decode_push_proto(body: bytes) -> list[RawSeries]:
    """push.v1.PushRequest (server/push.proto); names and values that are not UTF-8 are
    decoded with replacement."""
    request = push_pb2.PushRequest()
    try:
        request.ParseFromString(body)
    except DecodeError as error:
        raise PushError(f"malformed PushRequest: {error}") from None
    return [
        RawSeries(
            labels=[(_text(label.name), _text(label.value)) for label in series.labels],
            profiles=[sample.raw_profile for sample in series.samples],
        )
        for series in request.series
    ]


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


class _JsonLabel(BaseModel):
    name: str = ""
    value: str = ""


class _JsonSample(BaseModel):
    # protojson accepts the JSON name and the proto field name alike.
    raw_profile: str = Field(default="", validation_alias=AliasChoices("rawProfile", "raw_profile"))
    id: str = Field(default="", validation_alias=AliasChoices("ID", "id"))


class _JsonSeries(BaseModel):
    labels: list[_JsonLabel] = []
    samples: list[_JsonSample] = []


class _JsonPush(BaseModel):
    series: list[_JsonSeries] = []


def decode_push_json(body: bytes) -> list[RawSeries]:
    """The protojson form: {"series": [{"labels": [...], "samples": [{"rawProfile": b64}]}]}."""
    try:
        push = _JsonPush.model_validate_json(body)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        raise PushError(f"malformed PushRequest JSON: {where}: {first['msg']}") from None
    return [
        RawSeries(
            labels=[(label.name, label.value) for label in series.labels],
            profiles=[_base64(sample.raw_profile) for sample in series.samples],
        )
        for series in push.series
    ]


def _base64(text: str) -> bytes:
    # protojson reads standard and URL-safe base64, padded or not.
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.b64decode(padded, altchars=b"-_" if "-" in text or "_" in text else None)
    except (binascii.Error, ValueError):
        raise PushError("rawProfile is not base64") from None


# --- pprof to batches -----------------------------------------------------------------------


def push_batches(
    series: Sequence[RawSeries], body: bytes, limit: int, limits: IngestLimits
) -> Converted:
    """Every profile of every series as batches; `limit` bounds all decompression together.

    IngestLimitExceeded, before any stack is built, for a push over `limits`.
    """
    digest = hashlib.blake2b(body, digest_size=16).digest()
    converted = Converted()
    budget = [limit]
    # Everything decoded first, so the size budget is checked before any conversion.
    decoded = [
        [decode_profile(data, budget, limits.pprof()) for data in raw.profiles] for raw in series
    ]
    check_profiles([profile for profiles in decoded for profile in profiles], limits)
    for s_index, (raw, profiles) in enumerate(zip(series, decoded, strict=True)):
        labels = dict(raw.labels)
        type_name = _type_name(labels.get(NAME_LABEL, ""))
        podflame_labels = sanitize_labels(labels.items())
        for p_index, profile in enumerate(profiles):
            seed = digest + f":{s_index}:{p_index}".encode()
            target = _Target(type_name, podflame_labels, seed, limits.max_stack_frames)
            _add_profile(converted, profile, target)
    return converted


def check_profiles(profiles: Sequence[DecodedProfile], limits: IngestLimits) -> None:
    """The stacks and frames the profiles become, counted without expanding a location.

    Each sample type is a batch of its own, with every stack again: so counted.
    """
    stacks = frames = 0
    try:
        for profile in profiles:
            types = len(profile.sample_types)
            stacks += len(profile.message.sample) * types
            frames += expanded_frames(profile, limits.max_stack_frames) * types
    except PprofError as error:
        raise PushError(f"invalid pprof: {error}") from None
    check_expansion(limits, stacks, frames)


def decode_profile(data: bytes, budget: list[int], limits: PprofLimits) -> DecodedProfile:
    """Decode one raw profile, taking its decompressed size off the shared budget."""
    try:
        raw = gunzip(data, budget[0]) if data[:2] == GZIP_MAGIC else data
        if len(raw) > budget[0]:
            raise PprofTooLarge("the profiles are larger than the limit once decompressed")
        budget[0] -= len(raw)
        return decode_pprof(raw, len(raw), limits)
    except PprofLimitExceeded as error:
        raise pprof_limit_exceeded(error) from None
    except PprofTooLarge:
        raise
    except PprofError as error:
        raise PushError(f"invalid pprof: {error}") from None


def _type_name(name: str) -> str:
    if not name:
        raise PushError(f"a series has no {NAME_LABEL} label (the profile type, e.g. process_cpu)")
    return sanitize_label_name(name) or "_"


def sanitize_label_name(name: str) -> str:
    """podflame's label syntax, [A-Za-z_][A-Za-z0-9_]*: other characters become '_'."""
    cleaned = _INVALID_LABEL_CHARS.sub("_", name)[:_MAX_LABEL_NAME]
    if cleaned[:1].isdigit():
        cleaned = "_" + cleaned[: _MAX_LABEL_NAME - 1]
    return cleaned


def sanitize_labels(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for name, value in pairs:
        if not name or not value or (name.startswith("__") and name.endswith("__")):
            continue  # an empty value means no label, as in Prometheus
        labels[sanitize_label_name(name)] = value[:_MAX_TEXT]
    return labels


@dataclass(frozen=True)
class _Target:
    """Where a profile's batches go: their type, labels, batch id seed and stack depth."""

    type_name: str
    labels: dict[str, str]
    seed: bytes
    max_stack_frames: int
    time_range: tuple[int, int] | None = None


def _add_profile(converted: Converted, profile: DecodedProfile, target: _Target) -> None:
    if not profile.sample_types:
        raise PushError("invalid pprof: no sample types")
    default = _default_index(profile)
    time_range = target.time_range or _profile_time(profile)
    for index, sample_type in enumerate(profile.sample_types):
        type_name = target.type_name
        name = sanitize_label_name(
            type_name if index == default else f"{type_name}_{sample_type.type}"
        )
        unit = sample_type.unit or "count"
        batch = _batch(profile, index, name, target, time_range)
        if batch is None:
            continue
        description = pushed_description(type_name, sample_type.type)
        converted.batches.append((ProfileType(name, unit, description), batch))


def _default_index(profile: DecodedProfile) -> int:
    try:
        return profile.sample_type_index()
    except PprofError:
        return len(profile.sample_types) - 1  # a default_sample_type naming nothing


def _profile_time(profile: DecodedProfile) -> tuple[int, int]:
    start, duration = profile.message.time_nanos, profile.message.duration_nanos
    if start < 0 or duration < 0:
        raise PushError("invalid pprof: negative time_nanos or duration_nanos")
    if start == 0:
        end = time.time_ns()
        return max(end - duration, 0), end
    return start, start + duration


def _batch(
    profile: DecodedProfile,
    index: int,
    type_name: str,
    target: _Target,
    time_range: tuple[int, int],
) -> Batch | None:
    """Sample type `index` as one batch: a series per distinct set of sample labels."""
    stack_ids: dict[tuple[str, ...], int] = {}
    # A profile's distinct location lists (stacks_from_profile's numbers) -> stack_ids:
    # each is clipped and looked up once, however many samples repeat it.
    stack_of: dict[int, int] = {}
    series: dict[tuple[tuple[str, str], ...], dict[int, int]] = {}
    try:
        for sample, number, frames in stacks_from_profile(profile, index, target.max_stack_frames):
            stack = stack_of.get(number)
            if stack is None:
                stack = stack_of[number] = stack_ids.setdefault(_clip(frames), len(stack_ids))
            values = series.setdefault(_sample_labels(profile.text_labels(sample)), {})
            values[stack] = values.get(stack, 0) + sample.value[index]
    except PprofError as error:
        raise PushError(f"invalid pprof: {error}") from None
    wire_series: list[dict[str, Any]] = []
    for extra, values in series.items():
        samples = [{"stack": s, "value": v} for s, v in values.items() if v > 0]
        if samples:
            wire_series.append({"labels": target.labels | dict(extra), "samples": samples})
    if not wire_series:
        return None
    return _validated_batch(
        batch_id=hashlib.blake2b(target.seed + f":{index}".encode(), digest_size=16).hexdigest(),
        profile_type=type_name,
        period=max(profile.message.period, 1),
        start_time_ns=time_range[0],
        end_time_ns=time_range[1],
        stacks=[list(frames) for frames in stack_ids],
        series=wire_series,
    )


def _validated_batch(**fields: Any) -> Batch:
    try:
        batch = Batch.model_validate(fields)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        raise PushError(f"cannot store the profile: {where}: {first['msg']}") from None
    check_storable(batch)
    return batch


def check_storable(batch: Batch) -> None:
    """PushError for what the store refuses (server/rows.py), checked while converting.

    One push becomes several batches, written one after the other: every one is
    checked before the first is written, so a push is stored whole or not at all.
    """
    if batch.end_time_ns >= _MAX_TIME_NS:
        raise PushError(f"cannot store the profile: time {batch.end_time_ns} ns is out of range")
    for series in batch.series:
        pid = series.labels.get("pid")
        if pid is not None and not (pid.isascii() and pid.isdigit() and int(pid) <= _MAX_PID):
            raise PushError(f"cannot store the profile: label pid={pid!r} is not a process id")
        if any(sample.value > _MAX_VALUE for sample in series.samples):
            raise PushError(f"cannot store the profile: a value exceeds {_MAX_VALUE}")


def _clip(frames: tuple[str, ...]) -> tuple[str, ...]:
    if max(map(len, frames), default=0) <= _MAX_TEXT:
        return frames
    return tuple(frame[:_MAX_TEXT] for frame in frames)


def _sample_labels(pairs: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    if not pairs:
        return ()
    kept = [(key, text) for key, text in pairs if key not in _DROPPED_SAMPLE_LABELS]
    return tuple(sorted(sanitize_labels(kept).items()))


# --- the legacy /ingest ---------------------------------------------------------------------


@dataclass(frozen=True)
class LegacyUpload:
    """The query parameters of POST /ingest."""

    name: str
    start: float | None
    until: float | None
    sample_rate: int
    units: str
    spy_name: str


def legacy_series(name: str) -> tuple[str, dict[str, str]]:
    """`shop.cpu{env=prod,region=eu}` -> ("process_cpu", {service_name: shop, env: prod, ...})."""
    match = _LEGACY_NAME.fullmatch(name.strip())
    if match is None:
        raise PushError(f"invalid name {name!r}: expected app[.kind]{{key=value,...}}")
    app, tags = match.group(1).strip(), match.group(2) or ""
    base, _, suffix = app.rpartition(".")
    kind = ""
    if base and suffix in _LEGACY_SUFFIXES:
        app, kind = base, suffix
    type_name = "process_cpu" if kind in ("", *_LEGACY_CPU) else kind
    pairs = [(SERVICE_LABEL, app)]
    for tag in filter(None, (part.strip() for part in tags.split(","))):
        key, sep, value = tag.partition("=")
        if not sep or not key.strip():
            raise PushError(f"invalid tag {tag!r} in name: expected key=value")
        pairs.append((key.strip(), value.strip()))
    if not app:
        raise PushError("name has no application name")
    return type_name, sanitize_labels(pairs)


def legacy_time(upload: LegacyUpload) -> tuple[int, int] | None:
    if upload.start is None and upload.until is None:
        return None
    until = upload.until if upload.until is not None else time.time()
    start = upload.start if upload.start is not None else until
    if not 0 <= start <= until:
        raise PushError("from must be at most until, both Unix seconds")
    return int(start * 1e9), int(until * 1e9)


def legacy_folded(upload: LegacyUpload, body: bytes, limits: IngestLimits) -> Converted:
    """Folded lines `a;b;c 12`; with units=samples each count is 1/sampleRate s of CPU."""
    type_name, labels = legacy_series(upload.name)
    cpu = upload.units in ("", "samples")
    unit = "nanoseconds" if cpu else upload.units
    totals = _folded_totals(body, upload.sample_rate if cpu else None, limits)
    now = time.time_ns()
    start_ns, end_ns = legacy_time(upload) or (now - 10 * 1_000_000_000, now)
    seed = hashlib.blake2b(body + upload.name.encode(), digest_size=16).hexdigest()
    stacks = [list(frames) for frames, value in totals.items() if value > 0]
    values = [value for value in totals.values() if value > 0]
    converted = Converted()
    if not stacks:
        return converted
    period = round(1_000_000_000 / upload.sample_rate) if cpu else 1
    batch = _validated_batch(
        batch_id=hashlib.blake2b(
            f"{seed}:{start_ns}:{end_ns}".encode(), digest_size=16
        ).hexdigest(),
        profile_type=type_name,
        period=max(period, 1),
        start_time_ns=start_ns,
        end_time_ns=end_ns,
        stacks=stacks,
        series=[
            {"labels": labels, "samples": [{"stack": i, "value": v} for i, v in enumerate(values)]}
        ],
    )
    converted.batches.append((ProfileType(type_name, unit, legacy_description(type_name)), batch))
    return converted


def _folded_totals(
    body: bytes, sample_rate: int | None, limits: IngestLimits
) -> dict[tuple[str, ...], int]:
    """Each stack's count (in ns at `sample_rate` for CPU samples); stacks cut at
    max_stack_frames, lines and frames counted against the limits as they are read."""
    totals: dict[tuple[str, ...], int] = {}
    lines_read = frames_read = 0
    for number, line in enumerate(body.decode("utf-8", "replace").splitlines(), start=1):
        if not line.strip():
            continue
        stack, _, count_text = line.rstrip().rpartition(" ")
        # At most 18 digits: an Int64 value, and int() of a huge string is slow.
        if (
            not stack
            or not count_text.isascii()
            or not count_text.isdigit()
            or len(count_text) > 18
        ):
            raise PushError(f"line {number}: expected 'frame;frame;... count'")
        frames = _clip(tuple(truncate_stack(stack.split(";"), limits.max_stack_frames)))
        lines_read, frames_read = lines_read + 1, frames_read + len(frames)
        check_expansion(limits, lines_read, frames_read)
        count = int(count_text)
        value = round(count * 1_000_000_000 / sample_rate) if sample_rate else count
        totals[frames] = totals.get(frames, 0) + value
    return totals


def legacy_pprof(
    upload: LegacyUpload, data: bytes, body: bytes, limit: int, limits: IngestLimits
) -> Converted:
    type_name, labels = legacy_series(upload.name)
    profile = decode_profile(data, [limit], limits.pprof())
    check_profiles([profile], limits)
    seed = hashlib.blake2b(body + upload.name.encode(), digest_size=16).digest()
    converted = Converted()
    target = _Target(type_name, labels, seed, limits.max_stack_frames, legacy_time(upload))
    _add_profile(converted, profile, target)
    return converted


def multipart_profile(content_type: str, body: bytes) -> bytes:
    """The `profile` part of a multipart/form-data upload (Pyroscope's Go SDK sends one)."""
    header = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(header + body)
    if not message.is_multipart():
        raise PushError("malformed multipart body")
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "profile":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                return payload
    raise PushError("multipart body without a 'profile' part")

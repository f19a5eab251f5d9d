"""pprof profiles to and from podflame's stacks.

The profile itself is the message generated from model/pprof.proto (`pprof_pb2`,
decoded and encoded by the protobuf library); this module is the transform between
it and podflame's records: stacks of frames (model/frames.py) out, for exports that
`go tool pprof` reads; frame labels per sample in, for Pyroscope pushes and uploads.

Decoding takes untrusted bytes (SDK pushes). Every problem raises `PprofError`, a
ValueError: bytes protobuf cannot parse, and indexes or ids in the message that name
nothing (strings, locations, functions). The counts of PprofLimits are checked once
the message is parsed, before any stack is built.
"""

import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import chain, islice

from google.protobuf.message import DecodeError

from podflame.model import pprof_pb2 as pb
from podflame.model.frames import Frame
from podflame.model.profile import TRUNCATED_FRAME

GZIP_MAGIC = b"\x1f\x8b"
_GZIP_WBITS = 16 + zlib.MAX_WBITS
# Location id lists up to this long are cheaper to compare as tuples than encoded.
_SHORT = 128


class PprofError(ValueError):
    """The bytes are not a profile podflame can read."""


class PprofTooLarge(PprofError):
    """The profile decompresses to more than the allowed size."""


class PprofLimitExceeded(PprofTooLarge):
    """The profile has more of something than a PprofLimits field allows (`limit` names it)."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit


@dataclass(frozen=True)
class PprofLimits:
    """Most entries of each kind one profile may hold; None: no limit.

    Checked as soon as the message is parsed, before any stack is built: a small
    gzip-compressed profile can expand to millions of frames.
    """

    max_samples: int | None = None
    # Location ids, values and labels over all samples.
    max_sample_entries: int | None = None
    max_locations: int | None = None
    max_lines: int | None = None
    max_functions: int | None = None
    max_strings: int | None = None


@dataclass(frozen=True)
class ValueType:
    """A sample type (or the period type) with its strings looked up."""

    type: str
    unit: str


@dataclass(frozen=True)
class DecodedProfile:
    """A parsed profile, its string table decoded once (bytes that are not UTF-8
    replaced) and its sample types looked up. The rest of the message is read as is:
    the methods look its indexes up, checked."""

    message: pb.Profile
    strings: tuple[str, ...]
    sample_types: tuple[ValueType, ...]
    period_type: ValueType | None
    # The sample type's name; "" means the last sample type (pprof's rule).
    default_sample_type: str

    @classmethod
    def of(cls, message: pb.Profile) -> "DecodedProfile":
        """PprofError when a sample type names a string the table does not hold."""
        strings = tuple(text.decode("utf-8", "replace") for text in message.string_table)
        profile = cls(message, strings, (), None, "")
        period = message.period_type if message.HasField("period_type") else None
        return cls(
            message,
            strings,
            tuple(map(profile.value_type, message.sample_type)),
            None if period is None else profile.value_type(period),
            profile.string(message.default_sample_type),
        )

    def string(self, index: int) -> str:
        if 0 <= index < len(self.strings):
            return self.strings[index]
        if index == 0:
            return ""  # a profile without strings; index 0 is always ""
        raise PprofError(f"string index {index} outside the string table")

    def value_type(self, value_type: pb.ValueType) -> ValueType:
        return ValueType(self.string(value_type.type), self.string(value_type.unit))

    def sample_type_index(self, name: str = "") -> int:
        """Index of sample type `name`, or of the default one when name is ""."""
        name = name or self.default_sample_type
        if not self.sample_types:
            raise PprofError("the profile has no sample types")
        if not name:
            return len(self.sample_types) - 1
        for index, sample_type in enumerate(self.sample_types):
            if sample_type.type == name:
                return index
        raise PprofError(f"no sample type {name!r} in the profile")

    @cached_property
    def location_stacks(self) -> tuple[list[tuple[int, ...]], list[int]]:
        """The distinct location id lists of the samples, and each sample's index in them:
        stacks are counted and built once per distinct list (a push may repeat one deep
        stack thousands of times)."""
        numbers: dict[bytes | tuple[int, ...], int] = {}
        stacks: list[tuple[int, ...]] = []
        indexes = []
        for sample in self.message.sample:
            ids = sample.location_id
            # A long list is keyed by its encoding, copied and encoded in C: 5 times faster
            # than making each a tuple of Python ints; only each distinct one is made a tuple.
            key = (
                tuple(ids) if len(ids) <= _SHORT else pb.Sample(location_id=ids).SerializeToString()
            )
            number = numbers.get(key)
            if number is None:
                number = numbers[key] = len(stacks)
                stacks.append(key if isinstance(key, tuple) else tuple(ids))
            indexes.append(number)
        return stacks, indexes

    def text_labels(self, sample: pb.Sample) -> list[tuple[str, str]]:
        """The sample's (key, text) labels; numeric labels (measurements) are left out."""
        return [
            (self.string(label.key), self.string(label.str)) for label in sample.label if label.str
        ]


# --- decompression -------------------------------------------------------------------------


def gunzip(data: bytes, limit: int) -> bytes:
    """Decompress gzip, refusing (PprofTooLarge) anything past `limit` bytes."""
    decompressor = zlib.decompressobj(wbits=_GZIP_WBITS)
    try:
        # max_length stops a small "zip bomb" from expanding past the limit.
        out = decompressor.decompress(data, limit + 1)
    except zlib.error as error:
        raise PprofError(f"invalid gzip: {error}") from None
    if len(out) > limit:
        raise PprofTooLarge(f"profile larger than {limit} bytes once decompressed")
    if not decompressor.eof:
        raise PprofError("invalid gzip: truncated")
    return out


def maybe_gunzip(data: bytes, limit: int) -> bytes:
    """SDKs send raw profiles gzip-compressed or not; the magic bytes tell."""
    return gunzip(data, limit) if data[:2] == GZIP_MAGIC else data


# --- decoding and encoding -----------------------------------------------------------------


def decode(data: bytes, limit: int, limits: PprofLimits = PprofLimits()) -> DecodedProfile:
    """Decode a profile, gzip-compressed or not, of at most `limit` bytes decompressed."""
    if len(data) > limit:
        raise PprofTooLarge(f"profile larger than {limit} bytes")
    message = pb.Profile()
    try:
        message.ParseFromString(maybe_gunzip(data, limit))
    except DecodeError as error:
        raise PprofError(f"malformed protobuf: {error}") from None
    _check_limits(message, limits)
    return DecodedProfile.of(message)


def _check_limits(message: pb.Profile, limits: PprofLimits) -> None:
    _check_count("max_samples", limits.max_samples, len(message.sample), "samples")
    _check_count("max_locations", limits.max_locations, len(message.location), "locations")
    _check_count("max_functions", limits.max_functions, len(message.function), "functions")
    _check_count("max_strings", limits.max_strings, len(message.string_table), "strings")
    if limits.max_lines is not None:
        lines = sum(len(location.line) for location in message.location)
        _check_count("max_lines", limits.max_lines, lines, "lines (in its locations)")
    if limits.max_sample_entries is not None:
        entries = sum(
            len(sample.location_id) + len(sample.value) + len(sample.label)
            for sample in message.sample
        )
        _check_count(
            "max_sample_entries",
            limits.max_sample_entries,
            entries,
            "location ids, values and labels in its samples",
        )


def _check_count(limit: str, most: int | None, count: int, what: str) -> None:
    if most is not None and count > most:
        raise PprofLimitExceeded(limit, f"the profile has more than {most} {what}")


def encode(message: pb.Profile) -> bytes:
    """The profile as uncompressed profile.proto bytes."""
    return message.SerializeToString()


def encode_gzip(message: pb.Profile) -> bytes:
    """The profile as pprof files are: gzip-compressed profile.proto."""
    compressor = zlib.compressobj(wbits=_GZIP_WBITS)
    return compressor.compress(encode(message)) + compressor.flush()


class StringTable:
    """A profile's string table as it is written: each text once, its index handed out."""

    def __init__(self) -> None:
        # pprof requires string_table[0] == "".
        self.indexes: dict[str, int] = {"": 0}

    def __call__(self, text: str) -> int:
        return self.indexes.setdefault(text, len(self.indexes))

    def table(self) -> list[bytes]:
        # surrogateescape: a name read from bytes that are not UTF-8 is written back as them.
        return [text.encode("utf-8", "surrogateescape") for text in self.indexes]


# --- stacks to a profile -------------------------------------------------------------------


def profile_from_stacks(
    stacks: Iterable[tuple[Sequence[Frame | str], int]],
    sample_type: ValueType,
    *,
    period: int = 0,
    time_nanos: int = 0,
    duration_nanos: int = 0,
) -> pb.Profile:
    """One sample per stack (frames root first, a name read as `Frame.from_label`).

    One function per frame label and source file (its filename the file, where
    known), one location per function and line (its line the line).
    """
    strings = StringTable()
    functions: dict[tuple[str, str], int] = {}
    locations: dict[tuple[int, int], int] = {}
    message = pb.Profile()
    for frames, value in stacks:
        leaf_first = []
        for item in reversed(frames):
            frame = Frame.from_label(item) if isinstance(item, str) else item
            # setdefault hands out ids 1, 2, ... in order of first appearance.
            function = functions.setdefault((frame.label, frame.file), len(functions) + 1)
            leaf_first.append(locations.setdefault((function, frame.line), len(locations) + 1))
        message.sample.add(location_id=leaf_first, value=[value])
    for (function, line), index in locations.items():
        message.location.add(id=index, line=[pb.Line(function_id=function, line=line)])
    for (name, file), index in functions.items():
        message.function.add(id=index, name=strings(name), filename=strings(file))
    pprof_type = pb.ValueType(type=strings(sample_type.type), unit=strings(sample_type.unit))
    message.sample_type.append(pprof_type)
    message.period_type.CopyFrom(pprof_type)
    message.period = period
    message.time_nanos = time_nanos
    message.duration_nanos = duration_nanos
    message.string_table.extend(strings.table())
    return message


# --- a profile to stacks -------------------------------------------------------------------


def stacks_from_profile(
    profile: DecodedProfile, index: int, max_frames: int | None = None
) -> Iterator[tuple[pb.Sample, int, tuple[str, ...]]]:
    """Each sample with its frame labels root first, for sample type `index`'s value, and
    the number of its location list in profile.location_stacks (equal numbers, equal frames:
    each distinct list's frames are built once, one tuple shared by its samples).

    A stack deeper than `max_frames` keeps its leaf end under TRUNCATED_FRAME; the
    frames past the cut are never built (one location may expand to thousands).
    """
    message = profile.message
    types = len(message.sample_type)
    if not 0 <= index < types:
        raise PprofError(f"no sample type at index {index}")
    frames_of = _location_frames(profile)
    keep = None if max_frames is None else max_frames + 1  # one more shows the cut
    distinct, numbers = profile.location_stacks
    built: list[tuple[str, ...] | None] = [None] * len(distinct)
    for sample, number in zip(message.sample, numbers, strict=True):
        if len(sample.value) != types:
            raise PprofError(f"a sample has {len(sample.value)} values for {types} sample types")
        frames = built[number]
        if frames is None:
            frames = built[number] = _stack(frames_of, distinct[number], keep)
        yield sample, number, frames


def _stack(
    frames_of: dict[int, tuple[str, ...]], ids: tuple[int, ...], keep: int | None
) -> tuple[str, ...]:
    """The labels of a sample's locations, root first, cut to `keep` - 1 under
    TRUNCATED_FRAME when there are `keep` or more; read leaf first, lazily."""
    try:
        leaf_first = list(islice(chain.from_iterable(map(frames_of.__getitem__, ids)), keep))
    except KeyError as error:
        raise PprofError(f"a sample refers to unknown location {error}") from None
    if keep is not None and len(leaf_first) == keep:
        leaf_first[keep - 2 :] = [TRUNCATED_FRAME]
    # pprof lists the leaf first; podflame stores the root first.
    leaf_first.reverse()
    return tuple(leaf_first)


def expanded_frames(profile: DecodedProfile, max_frames: int) -> int:
    """How many frames stacks_from_profile(profile, i, max_frames) yields over all samples,
    counted from the locations' sizes, without building a frame."""
    sizes = {location.id: max(len(location.line), 1) for location in profile.message.location}
    distinct, numbers = profile.location_stacks
    try:
        depths = [min(sum(map(sizes.__getitem__, ids)), max_frames) for ids in distinct]
    except KeyError as error:
        raise PprofError(f"a sample refers to unknown location {error}") from None
    return sum(map(depths.__getitem__, numbers))


def folded_totals(profile: DecodedProfile, index: int) -> dict[tuple[str, ...], int]:
    """Sum of sample type `index` per stack (root first), whatever the sample labels."""
    totals: dict[tuple[str, ...], int] = {}
    for sample, _, frames in stacks_from_profile(profile, index):
        totals[frames] = totals.get(frames, 0) + sample.value[index]
    return totals


def _location_frames(profile: DecodedProfile) -> dict[int, tuple[str, ...]]:
    """Location id -> its frame labels, leaf first (as pprof lists a location's inlined
    lines: the caller last)."""
    message = profile.message
    names = {
        function.id: profile.string(function.name) or profile.string(function.system_name) or "?"
        for function in message.function
    }
    mappings = {mapping.id: mapping for mapping in message.mapping}
    frames: dict[int, tuple[str, ...]] = {}
    for location in message.location:
        if not location.line:
            mapping = mappings.get(location.mapping_id)
            frames[location.id] = (_address_frame(profile, location, mapping),)
            continue
        try:
            frames[location.id] = tuple(names[line.function_id] for line in location.line)
        except KeyError:
            raise PprofError(f"location {location.id} refers to unknown function") from None
    return frames


def _address_frame(
    profile: DecodedProfile, location: pb.Location, mapping: pb.Mapping | None
) -> str:
    """An unsymbolized frame, named like the agent names one: module+0xoffset."""
    filename = profile.string(mapping.filename) if mapping is not None else ""
    if mapping is None or not filename:
        return f"0x{location.address:x}"
    offset = location.address - mapping.memory_start + mapping.file_offset
    return f"{filename.rsplit('/', 1)[-1]}+0x{offset:x}"

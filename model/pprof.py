"""A small codec for pprof's profile.proto (perftools.profiles.Profile), no protobuf needed.

Only the fields podflame reads or writes are kept; unknown fields are skipped.
Decoding takes untrusted bytes (SDK pushes), so every length is checked
against what is left, varints are at most 10 bytes, groups are refused and
the nesting depth is fixed by the schema (no generic recursion). Every
problem raises `PprofError`, a ValueError.
"""

import re
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from podflame.model.frames import Frame
from podflame.model.profile import TRUNCATED_FRAME

GZIP_MAGIC = b"\x1f\x8b"
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_MAX_VARINT_BYTES = 10
_INT64_SIGN = 1 << 63
_UINT64 = 1 << 64

# One varint: up to 9 bytes with the continuation bit, then one without.
_VARINT_PATTERN = re.compile(rb"[\x80-\xff]{0,9}[\x00-\x7f]")

# Wire types of the protobuf encoding.
_VARINT, _FIXED64, _LEN, _START_GROUP, _END_GROUP, _FIXED32 = 0, 1, 2, 3, 4, 5


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

    Checked while decoding, before the entries are built: a small gzip-compressed
    profile can hold millions of them.
    """

    max_samples: int | None = None
    # Location ids kept per sample, leaf first: the root end of a deeper stack is dropped
    # unread (keep one more than the deepest stack stored, so its cut shows).
    max_sample_locations: int | None = None
    # Location ids, values and labels read over all samples.
    max_sample_entries: int | None = None
    max_locations: int | None = None
    max_lines: int | None = None
    max_functions: int | None = None
    max_strings: int | None = None


@dataclass(frozen=True)
class ValueType:
    type: str
    unit: str


@dataclass(frozen=True)
class Label:
    key: str
    # profile.proto calls it `str`; that name would shadow the builtin here.
    text: str = ""
    num: int = 0
    num_unit: str = ""


@dataclass
class Sample:
    # Leaf first, as in profile.proto.
    location_ids: list[int]
    values: list[int]
    labels: list[Label] = field(default_factory=list)


@dataclass(frozen=True)
class Line:
    function_id: int
    line: int = 0


@dataclass
class Location:
    id: int
    mapping_id: int = 0
    address: int = 0
    # Several lines mean inlining; the last one is the caller.
    lines: list[Line] = field(default_factory=list)


@dataclass(frozen=True)
class Function:
    id: int
    name: str
    system_name: str = ""
    filename: str = ""
    start_line: int = 0


@dataclass(frozen=True)
class Mapping:
    id: int
    memory_start: int = 0
    memory_limit: int = 0
    file_offset: int = 0
    filename: str = ""
    build_id: str = ""


@dataclass
class Profile:
    sample_types: list[ValueType] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    mappings: list[Mapping] = field(default_factory=list)
    locations: list[Location] = field(default_factory=list)
    functions: list[Function] = field(default_factory=list)
    time_nanos: int = 0
    duration_nanos: int = 0
    period_type: ValueType | None = None
    period: int = 0
    # The sample type's name; "" means the last sample type (pprof's rule).
    default_sample_type: str = ""

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


# --- wire reading ----------------------------------------------------------------------------


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    for index in range(pos, min(pos + _MAX_VARINT_BYTES, len(data))):
        byte = data[index]
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result & (_UINT64 - 1), index + 1
        shift += 7
    raise PprofError("truncated or overlong varint")


def _fields(data: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of one message; LEN values as memoryviews."""
    pos = 0
    end = len(data)
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise PprofError("field number 0")
        if wire == _VARINT:
            value, pos = _varint(data, pos)
            yield number, wire, value
        elif wire == _LEN:
            length, pos = _varint(data, pos)
            if length > end - pos:
                raise PprofError("length past the end of the message")
            yield number, wire, data[pos : pos + length]
            pos += length
        elif wire in (_FIXED64, _FIXED32):
            size = 8 if wire == _FIXED64 else 4
            if size > end - pos:
                raise PprofError("fixed-size field past the end of the message")
            yield number, wire, int.from_bytes(data[pos : pos + size], "little")
            pos += size
        else:
            # Groups are deprecated and nothing in profile.proto uses them.
            raise PprofError(f"unsupported wire type {wire}")


def message_fields(data: bytes | memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """(field number, value) of any protobuf message, for callers decoding their own."""
    for number, _, value in _fields(memoryview(data)):
        yield number, value


def field_bytes(value: int | memoryview, number: int) -> bytes:
    """A LEN field's bytes; PprofError if the field is a number."""
    return bytes(_bytes(value, number))


def _int64(value: int) -> int:
    return value - _UINT64 if value & _INT64_SIGN else value


def _scalar(value: int | memoryview, number: int) -> int:
    if isinstance(value, memoryview):
        raise PprofError(f"field {number}: expected a number")
    return value


def _bytes(value: int | memoryview, number: int) -> memoryview:
    if not isinstance(value, memoryview):
        raise PprofError(f"field {number}: expected bytes")
    return value


def _repeated(wire: int, value: int | memoryview, into: list[int], keep: int | None) -> int:
    """A repeated integer field arrives packed (one LEN) or one value per field.

    At most `keep` values are kept; the rest of a packed list is not even read. Returns
    how many values were read.
    """
    if isinstance(value, memoryview):
        room = len(value) if keep is None else max(keep - len(into), 0)
        items = _packed_varints(bytes(value), room)
        into.extend(items)
        return len(items)
    if wire != _VARINT:
        raise PprofError("repeated integer with a fixed-size wire type")
    if keep is None or len(into) < keep:
        into.append(value)
    return 1


def _packed_varints(data: bytes, most: int) -> list[int]:
    """The first `most` varints of a packed field, found by a regular expression and each
    distinct one decoded once: several times faster than a loop over the bytes, which
    matters since a gzip-compressed profile can pack millions of them."""
    if data.isascii():  # every varint is one byte: small ids, the common case
        return list(data[:most])
    window = data[: most * _MAX_VARINT_BYTES]  # holds the first `most`, whatever their size
    chunks = _VARINT_PATTERN.findall(window)[:most]
    # findall skips what does not match: the chunks must be the window's prefix, all of it
    # when every varint was wanted.
    taken = b"".join(chunks)
    if taken != window[: len(taken)] or (len(chunks) < most and len(taken) != len(data)):
        raise PprofError("truncated or overlong varint")
    decoded = {chunk: _varint(memoryview(chunk), 0)[0] for chunk in set(chunks)}
    return [decoded[chunk] for chunk in chunks]


@dataclass
class _SampleBudget:
    """What the samples of one profile may still cost to read (PprofLimits)."""

    keep_locations: int | None
    keep_values: int
    entries_left: int | None

    def spend(self, entries: int) -> None:
        if self.entries_left is not None:
            self.entries_left -= entries
            if self.entries_left < 0:
                raise PprofLimitExceeded(
                    "max_sample_entries",
                    "the profile's samples hold more location ids, values and labels than allowed",
                )


class _Strings:
    def __init__(self, table: list[str]) -> None:
        self._table = table

    def __getitem__(self, index: int) -> str:
        if index == 0 and not self._table:
            return ""  # a profile without strings; index 0 is always ""
        if not 0 <= index < len(self._table):
            raise PprofError(f"string index {index} outside the string table")
        return self._table[index]


# --- decoding --------------------------------------------------------------------------------


def decode(data: bytes, limit: int, limits: PprofLimits = PprofLimits()) -> Profile:
    """Decode a profile, gzip-compressed or not, of at most `limit` bytes decompressed."""
    if len(data) > limit:
        raise PprofTooLarge(f"profile larger than {limit} bytes")
    raw = memoryview(maybe_gunzip(data, limit))
    # The string table may come after the fields that index it: collect first.
    parts: dict[int, list[memoryview]] = {}
    numbers: dict[int, int] = {}
    table: list[str] = []
    for number, _, value in _fields(raw):
        if number == 6:
            _check_count("max_strings", limits.max_strings, len(table) + 1, "strings")
            table.append(bytes(_bytes(value, number)).decode("utf-8", "replace"))
        elif number in (1, 2, 3, 4, 5, 11):
            parts.setdefault(number, []).append(_bytes(value, number))
        elif number in (9, 10, 12, 14):
            numbers[number] = _int64(_scalar(value, number))
    _check_count("max_samples", limits.max_samples, len(parts.get(2, [])), "samples")
    _check_count("max_locations", limits.max_locations, len(parts.get(4, [])), "locations")
    _check_count("max_functions", limits.max_functions, len(parts.get(5, [])), "functions")
    strings = _Strings(table)
    period_types = parts.get(11, [])
    # One value more than the sample types is enough to tell the sample is wrong.
    budget = _SampleBudget(
        limits.max_sample_locations, len(parts.get(1, [])) + 1, limits.max_sample_entries
    )
    return Profile(
        sample_types=[_value_type(part, strings) for part in parts.get(1, [])],
        samples=[_sample(part, strings, budget) for part in parts.get(2, [])],
        mappings=[_mapping(part, strings) for part in parts.get(3, [])],
        locations=_locations(parts.get(4, []), limits.max_lines),
        functions=[_function(part, strings) for part in parts.get(5, [])],
        time_nanos=numbers.get(9, 0),
        duration_nanos=numbers.get(10, 0),
        period_type=_value_type(period_types[-1], strings) if period_types else None,
        period=numbers.get(12, 0),
        default_sample_type=strings[numbers.get(14, 0)],
    )


def _check_count(limit: str, most: int | None, count: int, what: str) -> None:
    if most is not None and count > most:
        raise PprofLimitExceeded(limit, f"the profile has more than {most} {what}")


def _locations(parts: list[memoryview], max_lines: int | None) -> list[Location]:
    locations = []
    lines = 0
    for part in parts:
        location = _location(part)
        lines += len(location.lines)
        _check_count("max_lines", max_lines, lines, "lines (in its locations)")
        locations.append(location)
    return locations


def _ints(data: memoryview) -> dict[int, int]:
    """A message of scalar fields only; the last value of a field wins, as in protobuf."""
    return {number: _scalar(value, number) for number, _, value in _fields(data)}


def _value_type(data: memoryview, strings: _Strings) -> ValueType:
    values = _ints(data)
    return ValueType(type=strings[values.get(1, 0)], unit=strings[values.get(2, 0)])


def _sample(data: memoryview, strings: _Strings, budget: _SampleBudget) -> Sample:
    location_ids: list[int] = []
    values: list[int] = []
    labels: list[Label] = []
    for number, wire, value in _fields(data):
        if number == 1:
            budget.spend(_repeated(wire, value, location_ids, budget.keep_locations))
        elif number == 2:
            budget.spend(_repeated(wire, value, values, budget.keep_values))
        elif number == 3:
            budget.spend(1)
            labels.append(_label(_bytes(value, number), strings))
    return Sample(location_ids, [_int64(value) for value in values], labels)


def _label(data: memoryview, strings: _Strings) -> Label:
    values = _ints(data)
    return Label(
        key=strings[values.get(1, 0)],
        text=strings[values.get(2, 0)],
        num=_int64(values.get(3, 0)),
        num_unit=strings[values.get(4, 0)],
    )


def _mapping(data: memoryview, strings: _Strings) -> Mapping:
    values = {number: value for number, value in _ints(data).items() if number <= 6}
    return Mapping(
        id=values.get(1, 0),
        memory_start=values.get(2, 0),
        memory_limit=values.get(3, 0),
        file_offset=values.get(4, 0),
        filename=strings[values.get(5, 0)],
        build_id=strings[values.get(6, 0)],
    )


def _location(data: memoryview) -> Location:
    location = Location(id=0)
    for number, _, value in _fields(data):
        if number == 1:
            location.id = _scalar(value, number)
        elif number == 2:
            location.mapping_id = _scalar(value, number)
        elif number == 3:
            location.address = _scalar(value, number)
        elif number == 4:
            line = _ints(_bytes(value, number))
            location.lines.append(Line(function_id=line.get(1, 0), line=_int64(line.get(2, 0))))
    return location


def _function(data: memoryview, strings: _Strings) -> Function:
    values = _ints(data)
    return Function(
        id=values.get(1, 0),
        name=strings[values.get(2, 0)],
        system_name=strings[values.get(3, 0)],
        filename=strings[values.get(4, 0)],
        start_line=_int64(values.get(5, 0)),
    )


# --- encoding --------------------------------------------------------------------------------


def _put_varint(out: bytearray, value: int) -> None:
    value &= _UINT64 - 1  # negative int64 values take ten bytes, as in protobuf
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _put_int(out: bytearray, number: int, value: int) -> None:
    if value:  # proto3: zero is the default and is not written
        _put_varint(out, number << 3 | _VARINT)
        _put_varint(out, value)


def _put_bytes(out: bytearray, number: int, value: bytes) -> None:
    _put_varint(out, number << 3 | _LEN)
    _put_varint(out, len(value))
    out += value


def _put_packed(out: bytearray, number: int, values: Iterable[int]) -> None:
    packed = bytearray()
    for value in values:
        _put_varint(packed, value)
    if packed:
        _put_bytes(out, number, bytes(packed))


class _StringTable:
    def __init__(self) -> None:
        # pprof requires string_table[0] == "".
        self.strings: dict[str, int] = {"": 0}

    def __call__(self, text: str) -> int:
        return self.strings.setdefault(text, len(self.strings))


def encode(profile: Profile) -> bytes:
    """The profile as uncompressed profile.proto bytes."""
    strings = _StringTable()
    out = bytearray()
    for sample_type in profile.sample_types:
        _put_bytes(out, 1, _encode_value_type(sample_type, strings))
    for sample in profile.samples:
        _put_bytes(out, 2, _encode_sample(sample, strings))
    for mapping in profile.mappings:
        _put_bytes(out, 3, _encode_mapping(mapping, strings))
    for location in profile.locations:
        _put_bytes(out, 4, _encode_location(location))
    for function in profile.functions:
        _put_bytes(out, 5, _encode_function(function, strings))
    _put_int(out, 9, profile.time_nanos)
    _put_int(out, 10, profile.duration_nanos)
    if profile.period_type is not None:
        _put_bytes(out, 11, _encode_value_type(profile.period_type, strings))
    _put_int(out, 12, profile.period)
    _put_int(out, 14, strings(profile.default_sample_type))
    # Written last: only now are all strings known. Field order does not matter.
    for text in strings.strings:
        _put_bytes(out, 6, text.encode())
    return bytes(out)


def encode_gzip(profile: Profile) -> bytes:
    """The profile as pprof files are: gzip-compressed profile.proto."""
    compressor = zlib.compressobj(wbits=_GZIP_WBITS)
    return compressor.compress(encode(profile)) + compressor.flush()


def _encode_value_type(value_type: ValueType, strings: _StringTable) -> bytes:
    out = bytearray()
    _put_int(out, 1, strings(value_type.type))
    _put_int(out, 2, strings(value_type.unit))
    return bytes(out)


def _encode_sample(sample: Sample, strings: _StringTable) -> bytes:
    out = bytearray()
    _put_packed(out, 1, sample.location_ids)
    _put_packed(out, 2, sample.values)
    for label in sample.labels:
        encoded = bytearray()
        _put_int(encoded, 1, strings(label.key))
        _put_int(encoded, 2, strings(label.text))
        _put_int(encoded, 3, label.num)
        _put_int(encoded, 4, strings(label.num_unit))
        _put_bytes(out, 3, bytes(encoded))
    return bytes(out)


def _encode_mapping(mapping: Mapping, strings: _StringTable) -> bytes:
    out = bytearray()
    _put_int(out, 1, mapping.id)
    _put_int(out, 2, mapping.memory_start)
    _put_int(out, 3, mapping.memory_limit)
    _put_int(out, 4, mapping.file_offset)
    _put_int(out, 5, strings(mapping.filename))
    _put_int(out, 6, strings(mapping.build_id))
    return bytes(out)


def _encode_location(location: Location) -> bytes:
    out = bytearray()
    _put_int(out, 1, location.id)
    _put_int(out, 2, location.mapping_id)
    _put_int(out, 3, location.address)
    for line in location.lines:
        encoded = bytearray()
        _put_int(encoded, 1, line.function_id)
        _put_int(encoded, 2, line.line)
        _put_bytes(out, 4, bytes(encoded))
    return bytes(out)


def _encode_function(function: Function, strings: _StringTable) -> bytes:
    out = bytearray()
    _put_int(out, 1, function.id)
    _put_int(out, 2, strings(function.name))
    _put_int(out, 3, strings(function.system_name))
    _put_int(out, 4, strings(function.filename))
    _put_int(out, 5, function.start_line)
    return bytes(out)


# --- stacks ----------------------------------------------------------------------------------


def profile_from_stacks(
    stacks: Iterable[tuple[Sequence[Frame | str], int]],
    sample_type: ValueType,
    *,
    period: int = 0,
    time_nanos: int = 0,
    duration_nanos: int = 0,
) -> Profile:
    """One sample per stack (frames root first, a name read as `Frame.from_label`).

    One function per frame label and source file (its filename the file, where
    known), one location per function and line (its Line.line the line).
    """
    functions: dict[tuple[str, str], int] = {}
    locations: dict[tuple[int, int], int] = {}
    samples = []
    for frames, value in stacks:
        leaf_first = []
        for item in reversed(frames):
            frame = Frame.from_label(item) if isinstance(item, str) else item
            # setdefault hands out ids 1, 2, ... in order of first appearance.
            function = functions.setdefault((frame.label, frame.file), len(functions) + 1)
            leaf_first.append(locations.setdefault((function, frame.line), len(locations) + 1))
        samples.append(Sample(location_ids=leaf_first, values=[value]))
    return Profile(
        sample_types=[sample_type],
        samples=samples,
        locations=[
            Location(id=index, lines=[Line(function_id=function, line=line)])
            for (function, line), index in locations.items()
        ],
        functions=[
            Function(id=index, name=name, filename=file)
            for (name, file), index in functions.items()
        ],
        time_nanos=time_nanos,
        duration_nanos=duration_nanos,
        period_type=sample_type,
        period=period,
    )


def stacks_from_profile(
    profile: Profile, index: int, max_frames: int | None = None
) -> Iterator[tuple[Sample, tuple[str, ...]]]:
    """Each sample with its frames root first, for sample type `index`'s value.

    A stack deeper than `max_frames` keeps its leaf end under TRUNCATED_FRAME; the
    frames past the cut are never built (one location may expand to thousands).
    """
    if not 0 <= index < len(profile.sample_types):
        raise PprofError(f"no sample type at index {index}")
    frames_of = _location_frames(profile)
    for number, sample in enumerate(profile.samples):
        if len(sample.values) != len(profile.sample_types):
            raise PprofError(
                f"sample {number} has {len(sample.values)} values"
                f" for {len(profile.sample_types)} sample types"
            )
        leaf_first: list[str] = []
        for location_id in sample.location_ids:
            location_frames = frames_of.get(location_id)
            if location_frames is None:
                raise PprofError(f"sample {number} refers to unknown location {location_id}")
            leaf_first.extend(reversed(location_frames))
            if max_frames is not None and len(leaf_first) > max_frames:
                leaf_first[max_frames - 1 :] = [TRUNCATED_FRAME]
                break
        # pprof lists the leaf first; podflame stores the root first.
        yield sample, tuple(reversed(leaf_first))


def expanded_frames(profile: Profile, max_frames: int) -> int:
    """How many frames stacks_from_profile(profile, i, max_frames) yields over all samples,
    counted from the locations' sizes, without building a frame."""
    sizes = {location.id: max(len(location.lines), 1) for location in profile.locations}
    total = 0
    for number, sample in enumerate(profile.samples):
        try:
            depth = sum(map(sizes.__getitem__, sample.location_ids))
        except KeyError as error:
            raise PprofError(f"sample {number} refers to unknown location {error}") from None
        total += min(depth, max_frames)
    return total


def folded_totals(profile: Profile, index: int) -> dict[tuple[str, ...], int]:
    """Sum of sample type `index` per stack (root first), whatever the sample labels."""
    totals: dict[tuple[str, ...], int] = {}
    for sample, frames in stacks_from_profile(profile, index):
        totals[frames] = totals.get(frames, 0) + sample.values[index]
    return totals


def _location_frames(profile: Profile) -> dict[int, tuple[str, ...]]:
    """Location id -> its frame names, caller first (inlined callees follow their caller)."""
    functions = {function.id: function for function in profile.functions}
    mappings = {mapping.id: mapping for mapping in profile.mappings}
    frames: dict[int, tuple[str, ...]] = {}
    for location in profile.locations:
        if not location.lines:
            frames[location.id] = (_address_frame(location, mappings.get(location.mapping_id)),)
            continue
        names = []
        for line in reversed(location.lines):
            function = functions.get(line.function_id)
            if function is None:
                raise PprofError(f"location {location.id} refers to unknown function")
            names.append(function.name or function.system_name or "?")
        frames[location.id] = tuple(names)
    return frames


def _address_frame(location: Location, mapping: Mapping | None) -> str:
    """An unsymbolized frame, named like the agent names one: module+0xoffset."""
    if mapping is None or not mapping.filename:
        return f"0x{location.address:x}"
    offset = location.address - mapping.memory_start + mapping.file_offset
    return f"{mapping.filename.rsplit('/', 1)[-1]}+0x{offset:x}"

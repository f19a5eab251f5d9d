"""ClickHouse's Native input format, for the column types ingest writes.

clickhouse-connect's insert() builds the same bytes from Python lists, one
value at a time: for a LowCardinality column it hashes every row's string
into a dictionary. Ingest knows the dictionary already (a label is the same
for all the samples of a series), so it writes the format directly, the
per-row parts as numpy arrays. Layout as ClickHouse reads a Native block
without block info (the HTTP interface's and INFILE's form): the column and
row counts, then per column its name, its type and its data.
"""

from collections.abc import Sequence

import numpy as np

# LowCardinality: the "keys serialization version" prefix (shared dictionaries
# with additional keys), then per block flags: the index width, and that this
# block carries its own dictionary (HasAdditionalKeys | NeedUpdateDictionary).
_LOW_CARDINALITY_VERSION = 1
_LOW_CARDINALITY_FLAGS = (1 << 9) | (1 << 10)
_INDEX_TYPES = (np.dtype("<u1"), np.dtype("<u2"), np.dtype("<u4"), np.dtype("<u8"))


def varint(number: int) -> bytes:
    """Unsigned LEB128, as Native writes lengths and counts."""
    out = bytearray()
    while number >= 0x80:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


def strings(values: Sequence[str]) -> bytes:
    """A String column: each value length-prefixed."""
    encoded = [value.encode() for value in values]
    return b"".join(varint(len(data)) + data for data in encoded)


def uint64(number: int) -> bytes:
    return number.to_bytes(8, "little")


class NativeBlock:
    """One block of `rows` rows, built column by column."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self._names: list[str] = []
        self._columns: list[bytes] = []

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._names)

    def add(self, name: str, type_name: str, data: bytes) -> None:
        """A column from its data as Native lays it out (prefixes first)."""
        self._names.append(name)
        self._columns.append(strings([name, type_name]) + data)

    def add_array(self, name: str, type_name: str, values: np.ndarray) -> None:
        """A fixed-width column (UInt32, Int64, DateTime64 ...) from its little-endian values."""
        if len(values) != self.rows:
            raise ValueError(f"column {name}: {len(values)} values for {self.rows} rows")
        little_endian = values.dtype.newbyteorder("<")
        self.add(name, type_name, values.astype(little_endian, copy=False).tobytes())

    def add_low_cardinality(self, name: str, dictionary: Sequence[str], keys: np.ndarray) -> None:
        """A LowCardinality(String) column: row i holds dictionary[keys[i]]."""
        if len(keys) != self.rows:
            raise ValueError(f"column {name}: {len(keys)} keys for {self.rows} rows")
        prefix = uint64(_LOW_CARDINALITY_VERSION)
        self.add(name, "LowCardinality(String)", prefix + low_cardinality_data(dictionary, keys))

    def add_string_map(
        self, name: str, offsets: np.ndarray, key_dictionary: Sequence[str], keys: np.ndarray,
        values: bytes,
    ) -> None:  # fmt: skip
        """A Map(LowCardinality(String), String) column.

        `offsets` ends each row's entries (cumulative), `keys` index
        `key_dictionary` per entry, `values` is the String column of the entries.
        """
        if len(offsets) != self.rows:
            raise ValueError(f"column {name}: {len(offsets)} offsets for {self.rows} rows")
        data = uint64(_LOW_CARDINALITY_VERSION)
        data += offsets.astype("<u8", copy=False).tobytes()
        data += low_cardinality_data(key_dictionary, keys) + values
        self.add(name, "Map(LowCardinality(String), String)", data)

    def encode(self) -> bytes:
        return varint(len(self._columns)) + varint(self.rows) + b"".join(self._columns)


def low_cardinality_data(dictionary: Sequence[str], keys: np.ndarray) -> bytes:
    """A LowCardinality(String) column's data after its prefix; nothing for no rows."""
    if len(keys) == 0:
        return b""
    width = next(t for t in _INDEX_TYPES if len(dictionary) <= np.iinfo(t).max + 1)
    flags = _INDEX_TYPES.index(width) | _LOW_CARDINALITY_FLAGS
    return b"".join(
        (
            uint64(flags),
            uint64(len(dictionary)),
            strings(dictionary),
            uint64(len(keys)),
            keys.astype(width, copy=False).tobytes(),
        )
    )

"""Protobuf wire-format building blocks for tests that craft messages by hand.

Independent of the protobuf library on purpose: the tests check how podflame's
decoding treats bytes no encoder would write, so they must not build them with it.
"""


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes([*out, value])


def varint_field(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def bytes_field(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload

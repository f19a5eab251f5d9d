"""Text from outside the agent (/proc, ELF files, perf maps, the API server) as valid Unicode.

Decided once, here: bytes that are not UTF-8 become backslash escapes, so an
executable named b"pfbar_\\xff\\xfe" shows as ``pfbar_\\xff\\xfe``: readable,
encodable as UTF-8 (the wire format and ClickHouse need that) and, unlike
U+FFFD, still telling two such names apart. A literal backslash is left as it
is, so the escaped form of an odd name can equal a name that holds those
characters; that is the price of readable names.

Where the raw name is needed to open a file (a /proc/PID/maps path), it is kept
as read with ``surrogateescape``; only what is shown or shipped goes through
`display`.
"""

import re

# Lone surrogates: what surrogateescape makes of undecodable bytes, or what a
# JSON "\\udcff" escape decodes to. They cannot be encoded as UTF-8.
_SURROGATE = re.compile("[\ud800-\udfff]")
# surrogateescape maps byte 0xNN (0x80 to 0xff) to U+DCNN.
_ESCAPED_BYTES = range(0xDC80, 0xDD00)


def decode(data: bytes) -> str:
    """UTF-8 text, with each undecodable byte as ``\\xNN``."""
    return data.decode("utf-8", "backslashreplace")


def display(text: str) -> str:
    """`text` with its lone surrogates escaped: ``\\xNN`` for a byte kept by
    surrogateescape, ``\\udNNN`` for any other."""
    if text.isascii():  # nearly always: one pass in C, no regex
        return text
    return _SURROGATE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code in _ESCAPED_BYTES:
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}"

"""Demangled C++ and Rust (legacy and v0) names.

C++ (Itanium ``_Z...``) goes through libstdc++'s own ``__cxa_demangle``: the
grammar is vast and the library that produced the names is the authority.
Rust's two schemes are decoded here in Python, following the `rustc-demangle`
crate and printing what its alternate form (``{:#}``) prints, that is without
the hashes that tell crate versions or monomorphisations apart: a flame graph
should merge those frames, not split them.

Every function here returns the input unchanged rather than raise: a symbol
table is untrusted input, and an odd name must never cost a profile.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import re
from collections.abc import Callable, Iterable
from typing import Any

from .text import decode

_CACHE_SIZE = 16_384
# Longer C++ names are returned as they are: libstdc++'s demangler is
# recursive, and real names stay far below this.
_MAX_CXX_LENGTH = 65_536
_LIBSTDCXX_FALLBACKS = ("/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/usr/lib64/libstdc++.so.6")


def demangle(name: str) -> str:
    """The demangled form of `name`, or `name` itself if it is not mangled.

    Never raises. Results are cached (LRU), since the same names recur in
    every profile.
    """
    return _demangle_cached(name)


def demangle_many(names: Iterable[str]) -> list[str]:
    """`demangle` of each name, in order."""
    return [_demangle_cached(name) for name in names]


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _demangle_cached(name: str) -> str:
    try:
        if name.startswith("_ZN"):
            rust = _rust_legacy(name)
            if rust is not None:
                return rust
        if name.startswith("_R"):
            return _rust_v0(name) or name
        if name.startswith("_Z"):
            return _cxx(name) or name
    except Exception:
        # Belt and braces: the parsers raise nothing on purpose, but a name
        # must never take the caller down.
        return name
    return name


# --- C++ -------------------------------------------------------------------

_Demangler = Callable[[str], str | None]


@functools.cache
def _cxa_demangler() -> _Demangler | None:
    """A wrapper around libstdc++'s ``__cxa_demangle``; None without libstdc++.

    Loaded on first use, so importing this module costs nothing.
    """
    for candidate in (ctypes.util.find_library("stdc++"), *_LIBSTDCXX_FALLBACKS):
        if not candidate:
            continue
        try:
            cxa = ctypes.CDLL(candidate).__cxa_demangle
            # The buffer comes from malloc: the process-wide free matches it.
            free = ctypes.CDLL(None).free
        except (OSError, AttributeError):
            continue
        return _bind(cxa, free)
    return None


def _bind(cxa: Any, free: Any) -> _Demangler:
    size_p = ctypes.POINTER(ctypes.c_size_t)
    cxa.argtypes = [ctypes.c_char_p, ctypes.c_char_p, size_p, ctypes.POINTER(ctypes.c_int)]
    # void*, not c_char_p: ctypes would copy a c_char_p and lose the pointer to free.
    cxa.restype = ctypes.c_void_p
    free.argtypes = [ctypes.c_void_p]
    free.restype = None

    def call(name: str) -> str | None:
        status = ctypes.c_int(-1)
        pointer = cxa(name.encode("utf-8", "surrogateescape"), None, None, ctypes.byref(status))
        if not pointer:
            return None
        try:
            if status.value != 0:
                return None
            return decode(ctypes.string_at(pointer))
        finally:
            free(pointer)

    return call


def _cxx(name: str) -> str | None:
    if len(name) > _MAX_CXX_LENGTH or "\0" in name:
        return None
    demangler = _cxa_demangler()
    return demangler(name) if demangler is not None else None


# --- Rust, shared ----------------------------------------------------------

# ThinLTO renames internal symbols with this suffix; rustc-demangle drops it.
_LLVM_SUFFIX = re.compile(r"\.llvm\.[0-9A-F@]*$")
# What rustc-demangle keeps after a name: LLVM's ".cold", ".0" and the like.
_SYMBOL_LIKE = re.compile(r"[!-~]*")


def _split_suffix(rest: str) -> str | None:
    """The suffix to print after a Rust name, or None if `rest` is not one."""
    if not rest or (rest.startswith(".") and _SYMBOL_LIKE.fullmatch(rest)):
        return rest
    return None


def _strip_llvm(name: str) -> str:
    i = name.find(".llvm.")
    return name[:i] if i >= 0 and _LLVM_SUFFIX.fullmatch(name, i) else name


# --- Rust legacy -----------------------------------------------------------

# rustc-demangle's test for the hash element that its alternate form omits.
_RUST_HASH = re.compile(r"h[0-9a-fA-F]*")
_LEGACY_ESCAPES = {
    "SP": "@",
    "BP": "*",
    "RF": "&",
    "LT": "<",
    "GT": ">",
    "LP": "(",
    "RP": ")",
    "C": ",",
}


def _rust_legacy(name: str) -> str | None:
    """``_ZN`` + length-prefixed identifiers + ``E``; None if not a Rust name.

    Plain nested C++ names have the same shape. A name counts as Rust only
    if it ends in a hash element or uses Rust's escapes; the rest go to
    libstdc++, which agrees on plain names and also knows C++'s suffixes
    (``.cold`` prints as ``[clone .cold]``).
    """
    name = _strip_llvm(name)
    if not name.isascii():
        return None
    elements: list[str] = []
    pos = 3
    while pos < len(name) and name[pos] != "E":
        digits = pos
        while pos < len(name) and name[pos].isdigit():
            pos += 1
        if not 0 < pos - digits <= len(str(len(name))):
            return None  # no digits, or a length longer than the name
        end = pos + int(name[digits:pos])
        if end > len(name):
            return None
        elements.append(name[pos:end])
        pos = end
    suffix = _split_suffix(name[pos + 1 :]) if pos < len(name) else None
    if suffix is None or not elements:
        return None
    if _RUST_HASH.fullmatch(elements[-1]):
        elements.pop()
    elif not any("$" in e or ".." in e for e in elements):
        return None
    demangled = "::".join(_unescape_legacy(e) for e in elements)
    return demangled + suffix if demangled else None


def _unescape_legacy(element: str) -> str:
    """Decode ``$LT$``-style escapes and ``..`` (for ``::``), as rustc-demangle does."""
    out: list[str] = []
    rest = element[1:] if element.startswith("_$") else element
    while rest:
        if rest.startswith(".."):
            out.append("::")
            rest = rest[2:]
        elif rest.startswith("."):
            out.append(".")
            rest = rest[1:]
        elif rest.startswith("$"):
            end = rest.find("$", 1)
            decoded = _legacy_escape(rest[1:end]) if end > 0 else None
            if decoded is None:
                break  # rustc-demangle prints the rest verbatim
            out.append(decoded)
            rest = rest[end + 1 :]
        else:
            cut = min((i for i in (rest.find("$"), rest.find(".")) if i >= 0), default=len(rest))
            out.append(rest[:cut])
            rest = rest[cut:]
    out.append(rest)
    return "".join(out)


def _legacy_escape(escape: str) -> str | None:
    if escape in _LEGACY_ESCAPES:
        return _LEGACY_ESCAPES[escape]
    digits = escape[1:]
    if escape[:1] != "u" or not digits or not re.fullmatch(r"[0-9a-f]+", digits):
        return None
    code = int(digits, 16)
    if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        return None
    char = chr(code)
    return None if _is_control(char) else char


def _is_control(char: str) -> bool:
    return ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0


# --- Rust v0 ---------------------------------------------------------------

# rustc-demangle allows 500; each level costs a few Python frames here, and
# real names nest a few dozen levels at most.
_V0_MAX_DEPTH = 150
# Backreferences can make the output exponential in the input.
_V0_MAX_OUTPUT = 65_536
_U64 = 1 << 64
_BASIC_TYPES = {
    "a": "i8",
    "b": "bool",
    "c": "char",
    "d": "f64",
    "e": "str",
    "f": "f32",
    "h": "u8",
    "i": "isize",
    "j": "usize",
    "l": "i32",
    "m": "u32",
    "n": "i128",
    "o": "u128",
    "p": "_",
    "s": "i16",
    "t": "u16",
    "u": "()",
    "v": "...",
    "x": "i64",
    "y": "u64",
    "z": "!",
}
_SIGNED_CONSTS = frozenset("asilxn")
_UNSIGNED_CONSTS = frozenset("htmyoj")


class _Invalid(Exception):
    """Not a (supported) v0 name, or over a limit."""


def _rust_v0(name: str) -> str | None:
    """``_R`` + path [+ instantiating crate] [+ ``.suffix``], in alternate form."""
    name = _strip_llvm(name)
    inner = name[2:]
    if not inner or not inner.isascii() or not "A" <= inner[0] <= "Z":
        return None
    try:
        # First a silent pass, as rustc-demangle does, to find where the path
        # ends; printing follows backreferences the silent pass skips.
        checker = _V0Printer(inner, printing=False)
        checker.path(in_value=False)
        if checker.pos < len(inner) and "A" <= inner[checker.pos] <= "Z":
            checker.path(in_value=False)
        suffix = _split_suffix(inner[checker.pos :])
        if suffix is None:
            return None
        printer = _V0Printer(inner, printing=True)
        printer.path(in_value=True)
        return printer.text() + suffix
    except (_Invalid, RecursionError):
        return None


class _Ident:
    """An identifier: plain ASCII, or ASCII + Punycode (``u`` prefix)."""

    __slots__ = ("ascii", "punycode")

    def __init__(self, ascii_part: str, punycode: str) -> None:
        self.ascii = ascii_part
        self.punycode = punycode

    def __bool__(self) -> bool:
        return bool(self.ascii or self.punycode)

    def __str__(self) -> str:
        if not self.punycode:
            return self.ascii
        decoded = _punycode_decode(self.ascii, self.punycode)
        if decoded is not None:
            return decoded
        # What rustc-demangle shows for what it cannot (or will not) decode.
        encoded = f"{self.ascii}-{self.punycode}" if self.ascii else self.punycode
        return f"punycode{{{encoded}}}"


# RFC 3492 parameters.
_PUNY_BASE, _PUNY_TMIN, _PUNY_TMAX, _PUNY_SKEW = 36, 1, 26, 38
# rustc-demangle decodes identifiers up to this many characters.
_PUNY_MAX_CHARS = 128


def _punycode_decode(ascii_part: str, punycode: str) -> str | None:
    """RFC 3492 decoding as rustc-demangle does it (lowercase digits only).

    Not the `punycode` codec: that accepts what rustc-demangle refuses, and
    its output is unbounded.
    """
    if len(ascii_part) > _PUNY_MAX_CHARS:
        return None
    out = list(ascii_part)
    bias, damp, i, n, position = 72, 700, 0, 0x80, 0
    while position < len(punycode):
        read = _punycode_delta(punycode, position, bias)
        if read is None:
            return None
        delta, position = read
        i += delta
        n += i // (len(out) + 1)
        i %= len(out) + 1
        if n > 0x10FFFF or 0xD800 <= n <= 0xDFFF or len(out) >= _PUNY_MAX_CHARS:
            return None
        out.insert(i, chr(n))
        i += 1
        bias = _punycode_adapt(delta, damp, len(out))
        damp = 2
    return "".join(out)


def _punycode_delta(punycode: str, position: int, bias: int) -> tuple[int, int] | None:
    """The variable-length integer at `position`: (its value, the position after it);
    None if a digit is not one, the digits end within it, or it passes 64 bits."""
    delta, weight, k = 0, 1, 0
    while position < len(punycode):
        k += _PUNY_BASE
        threshold = min(max(k - bias, _PUNY_TMIN), _PUNY_TMAX)
        digit = _punycode_digit(punycode[position])
        position += 1
        if digit is None:
            return None
        delta += digit * weight
        if delta >= _U64:
            return None
        if digit < threshold:
            return delta, position
        weight *= _PUNY_BASE - threshold
        if weight >= _U64:
            return None
    return None


def _punycode_digit(char: str) -> int | None:
    if "a" <= char <= "z":
        return ord(char) - ord("a")
    if "0" <= char <= "9":
        return ord(char) - ord("0") + 26
    return None


def _punycode_adapt(delta: int, damp: int, length: int) -> int:
    delta //= damp
    delta += delta // length
    k = 0
    while delta > ((_PUNY_BASE - _PUNY_TMIN) * _PUNY_TMAX) // 2:
        delta //= _PUNY_BASE - _PUNY_TMIN
        k += _PUNY_BASE
    return k + ((_PUNY_BASE - _PUNY_TMIN + 1) * delta) // (delta + _PUNY_SKEW)


class _V0Printer:
    """A recursive-descent printer of the v0 grammar (rustc-demangle's `Printer`).

    `printing=False` parses only; backreferences are then not followed, which
    keeps that pass linear in the input. Any syntax error raises `_Invalid`.
    """

    def __init__(self, sym: str, *, printing: bool) -> None:
        self.sym = sym
        self.pos = 0
        self.depth = 0
        self.printing = printing
        self.out: list[str] = []
        self.out_len = 0
        self.bound_lifetimes = 0

    def text(self) -> str:
        return "".join(self.out)

    # Lexing.

    def next(self) -> str:
        if self.pos >= len(self.sym):
            raise _Invalid
        char = self.sym[self.pos]
        self.pos += 1
        return char

    def eat(self, char: str) -> bool:
        if self.sym.startswith(char, self.pos):
            self.pos += 1
            return True
        return False

    def push_depth(self) -> None:
        self.depth += 1
        if self.depth > _V0_MAX_DEPTH:
            raise _Invalid

    def integer_62(self) -> int:
        """``_`` is 0; otherwise base-62 digits up to ``_``, plus one."""
        if self.eat("_"):
            return 0
        value = 0
        while not self.eat("_"):
            value = value * 62 + _base62_digit(self.next())
            if value >= _U64:
                raise _Invalid
        return value + 1

    def opt_integer_62(self, tag: str) -> int:
        return self.integer_62() + 1 if self.eat(tag) else 0

    def decimal(self) -> int:
        start = self.pos
        if self.eat("0"):
            return 0
        while self.pos < len(self.sym) and self.sym[self.pos].isdigit():
            self.pos += 1
        if not 0 < self.pos - start <= len(str(len(self.sym))):
            raise _Invalid  # no digits, or a length longer than the name
        return int(self.sym[start : self.pos])

    def ident(self) -> _Ident:
        is_punycode = self.eat("u")
        length = self.decimal()
        self.eat("_")
        start, self.pos = self.pos, self.pos + length
        if self.pos > len(self.sym):
            raise _Invalid
        text = self.sym[start : self.pos]
        if not is_punycode:
            return _Ident(text, "")
        ascii_part, _, punycode = text.rpartition("_")
        if not punycode:
            raise _Invalid
        return _Ident(ascii_part, punycode)

    def hex_nibbles(self) -> str:
        start = self.pos
        while (char := self.next()) != "_":
            if char not in "0123456789abcdef":
                raise _Invalid
        return self.sym[start : self.pos - 1]

    # Output.

    def print(self, text: object) -> None:
        if self.printing:
            piece = str(text)
            self.out_len += len(piece)
            if self.out_len > _V0_MAX_OUTPUT:
                raise _Invalid
            self.out.append(piece)

    def sep_list(self, item: Callable[[], object], separator: str) -> int:
        count = 0
        while not self.eat("E"):
            if count:
                self.print(separator)
            item()
            count += 1
        return count

    def backref(self, then: Callable[[], object]) -> None:
        """Follow ``B<offset>_`` (only when printing) and come back."""
        start = self.pos - 1
        target = self.integer_62()
        if target >= start:
            raise _Invalid  # only strictly backwards: no cycles
        if not self.printing:
            return
        saved = self.pos, self.depth
        self.pos = target
        self.push_depth()
        then()
        self.pos, self.depth = saved

    def lifetime(self, index: int) -> None:
        if not self.printing:
            return  # bound lifetimes are only tracked when printing
        if index == 0:
            self.print("'_")
            return
        depth = self.bound_lifetimes - index
        if depth < 0:
            raise _Invalid
        self.print("'" + (chr(ord("a") + depth) if depth < 26 else f"_{depth}"))

    def in_binder(self, body: Callable[[], object]) -> None:
        count = self.opt_integer_62("G")
        if not self.printing:
            body()
            return
        if count:
            self.print("for<")
            for i in range(count):  # long lists stop at the output limit
                if i:
                    self.print(", ")
                self.bound_lifetimes += 1
                self.lifetime(1)
            self.print("> ")
        body()
        self.bound_lifetimes -= count

    # The grammar.

    def path(self, in_value: bool) -> None:
        self.push_depth()
        tag = self.next()
        if tag == "C":
            self.opt_integer_62("s")  # crate disambiguator: not in the alternate form
            self.print(self.ident())
        elif tag == "N":
            self.nested_path(in_value)
        elif tag in "MXY":
            self.impl_path(tag)
        elif tag == "I":
            self.path(in_value)
            self.print("::<" if in_value else "<")
            self.sep_list(self.generic_arg, ", ")
            self.print(">")
        elif tag == "B":
            self.backref(lambda: self.path(in_value))
        else:
            raise _Invalid
        self.depth -= 1

    def nested_path(self, in_value: bool) -> None:
        namespace = self.next()
        self.path(in_value)
        disambiguator = self.opt_integer_62("s")
        name = self.ident()
        if "A" <= namespace <= "Z":
            kind = {"C": "closure", "S": "shim"}.get(namespace, namespace)
            label = f":{name}" if name else ""
            self.print(f"::{{{kind}{label}#{disambiguator}}}")
        elif "a" <= namespace <= "z":
            if name:
                self.print(f"::{name}")
        else:
            raise _Invalid

    def impl_path(self, tag: str) -> None:
        if tag != "Y":
            # The impl's own path is parsed but not shown.
            self.opt_integer_62("s")
            printing, self.printing = self.printing, False
            self.path(in_value=False)
            self.printing = printing
        self.print("<")
        self.type()
        if tag != "M":
            self.print(" as ")
            self.path(in_value=False)
        self.print(">")

    def generic_arg(self) -> None:
        if self.eat("L"):
            self.lifetime(self.integer_62())
        elif self.eat("K"):
            self.const(in_value=False)
        else:
            self.type()

    def type(self) -> None:
        tag = self.next()
        basic = _BASIC_TYPES.get(tag)
        if basic is not None:
            self.print(basic)
            return
        self.push_depth()
        if tag in "RQ":
            self.print("&")
            if self.eat("L"):
                index = self.integer_62()
                if index:
                    self.lifetime(index)
                    self.print(" ")
            self.print("mut " if tag == "Q" else "")
            self.type()
        elif tag in "PO":
            self.print("*const " if tag == "P" else "*mut ")
            self.type()
        elif tag in "AS":
            self.print("[")
            self.type()
            if tag == "A":
                self.print("; ")
                self.const(in_value=True)
            self.print("]")
        elif tag == "T":
            self.print("(")
            self.print("," if self.sep_list(self.type, ", ") == 1 else "")
            self.print(")")
        elif tag == "F":
            self.in_binder(self.fn_sig)
        elif tag == "D":
            self.dyn_type()
        elif tag == "B":
            self.backref(self.type)
        else:
            self.pos -= 1  # a path: let `path` see its tag
            self.path(in_value=False)
        self.depth -= 1

    def fn_sig(self) -> None:
        is_unsafe = self.eat("U")
        abi = None
        if self.eat("K"):
            if self.eat("C"):
                abi = "C"
            else:
                ident = self.ident()
                if not ident.ascii or ident.punycode:
                    raise _Invalid
                abi = ident.ascii.replace("_", "-")  # "-" was mangled as "_"
        self.print("unsafe " if is_unsafe else "")
        self.print(f'extern "{abi}" ' if abi is not None else "")
        self.print("fn(")
        self.sep_list(self.type, ", ")
        self.print(")")
        if not self.eat("u"):  # a `()` return type is not shown
            self.print(" -> ")
            self.type()

    def dyn_type(self) -> None:
        self.print("dyn ")
        self.in_binder(lambda: self.sep_list(self.dyn_trait, " + "))
        if not self.eat("L"):
            raise _Invalid
        index = self.integer_62()
        if index:
            self.print(" + ")
            self.lifetime(index)

    def dyn_trait(self) -> None:
        is_open = self.path_maybe_open_generics()
        while self.eat("p"):
            self.print(", " if is_open else "<")
            is_open = True
            self.print(f"{self.ident()} = ")
            self.type()
        if is_open:
            self.print(">")

    def path_maybe_open_generics(self) -> bool:
        """A trait path whose ``<...`` stays open for associated type bindings."""
        if self.eat("B"):
            found: list[bool] = [False]
            self.backref(lambda: found.__setitem__(0, self.path_maybe_open_generics()))
            return found[0]
        if self.eat("I"):
            self.path(in_value=False)
            self.print("<")
            self.sep_list(self.generic_arg, ", ")
            return True
        self.path(in_value=False)
        return False

    def const(self, in_value: bool) -> None:
        tag = self.next()
        self.push_depth()
        if tag == "R" and self.eat("e"):
            self.const_str()  # `"..."` rather than `&*"..."`
        else:
            # Composite constants in a generic argument list get braces: `{&5}`.
            braced = not in_value and tag in "RQAeTV"
            self.print("{" if braced else "")
            self.const_body(tag, in_value)
            self.print("}" if braced else "")
        self.depth -= 1

    def const_body(self, tag: str, in_value: bool) -> None:
        if tag == "p":
            self.print("_")
        elif tag in _UNSIGNED_CONSTS:
            self.const_uint()
        elif tag in _SIGNED_CONSTS:
            self.print("-" if self.eat("n") else "")
            self.const_uint()
        elif tag == "b":
            self.const_bool()
        elif tag == "c":
            self.const_char()
        elif tag == "e":
            self.print("*")
            self.const_str()
        elif tag in "RQ":
            self.print("&mut " if tag == "Q" else "&")
            self.const(in_value=True)
        elif tag in "AT":
            self.print("[" if tag == "A" else "(")
            count = self.sep_list(lambda: self.const(in_value=True), ", ")
            self.print("]" if tag == "A" else ",)" if count == 1 else ")")
        elif tag == "V":
            self.const_variant()
        elif tag == "B":
            self.backref(lambda: self.const(in_value))
        else:
            raise _Invalid

    def const_uint(self) -> None:
        nibbles = self.hex_nibbles()
        value = _parse_uint(nibbles)
        self.print(value if value is not None else f"0x{nibbles}")

    def const_bool(self) -> None:
        value = _parse_uint(self.hex_nibbles())
        if value not in (0, 1):
            raise _Invalid
        self.print("true" if value else "false")

    def const_char(self) -> None:
        value = _parse_uint(self.hex_nibbles())
        if value is None or value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
            raise _Invalid
        self.print(_quoted("'", chr(value)))

    def const_str(self) -> None:
        nibbles = self.hex_nibbles()
        if len(nibbles) % 2:
            raise _Invalid
        try:
            text = bytes.fromhex(nibbles).decode("utf-8")
        except ValueError as exc:
            raise _Invalid from exc
        self.print(_quoted('"', text))

    def const_variant(self) -> None:
        self.path(in_value=True)
        kind = self.next()
        if kind == "T":
            self.print("(")
            self.sep_list(lambda: self.const(in_value=True), ", ")
            self.print(")")
        elif kind == "S":
            self.print(" { ")
            self.sep_list(self.const_field, ", ")
            self.print(" }")
        elif kind != "U":
            raise _Invalid

    def const_field(self) -> None:
        self.opt_integer_62("s")
        self.print(f"{self.ident()}: ")
        self.const(in_value=True)


def _base62_digit(char: str) -> int:
    if "0" <= char <= "9":
        return ord(char) - ord("0")
    if "a" <= char <= "z":
        return ord(char) - ord("a") + 10
    if "A" <= char <= "Z":
        return ord(char) - ord("A") + 36
    raise _Invalid


def _parse_uint(nibbles: str) -> int | None:
    """The value of hex `nibbles` if it fits in 64 bits (as rustc-demangle prints it)."""
    digits = nibbles.lstrip("0")
    return int(digits or "0", 16) if len(digits) <= 16 else None


# Rust's char::escape_debug for the characters that matter in names.
_ESCAPES = {"\t": "\\t", "\r": "\\r", "\n": "\\n", "\\": "\\\\", "\0": "\\0"}


def _quoted(quote: str, text: str) -> str:
    out = [quote]
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char in "'\"":
            # Only the quote that delimits needs escaping.
            out.append("\\" + char if char == quote else char)
        elif not char.isprintable():
            out.append(f"\\u{{{ord(char):x}}}")
        else:
            out.append(char)
    out.append(quote)
    return "".join(out)

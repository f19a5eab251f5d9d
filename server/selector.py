"""Label selectors in PromQL syntax: `{namespace="shop", pod=~"api-.*", comm!="sh"}`.

Parsing only; turning a selector into SQL is the store's business.
"""

import re
from dataclasses import dataclass
from enum import Enum

LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Go's strconv.Unquote, which PromQL uses, knows these single-character escapes.
_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    '"': '"',
    "'": "'",
}
_HEX_ESCAPE_DIGITS = {"x": 2, "u": 4, "U": 8}


class Op(Enum):
    EQ = "="
    NE = "!="
    RE = "=~"
    NRE = "!~"

    @property
    def is_regex(self) -> bool:
        return self in (Op.RE, Op.NRE)

    @property
    def negated(self) -> bool:
        return self in (Op.NE, Op.NRE)


@dataclass(frozen=True)
class Matcher:
    name: str
    op: Op
    value: str
    # Offset of the value in the selector text, to point at a regex the engine rejects.
    position: int = 0

    @property
    def anchored_regex(self) -> str:
        """The regex as PromQL applies it: it must match the whole value."""
        return f"^(?:{self.value})$"


class SelectorError(ValueError):
    def __init__(self, message: str, position: int) -> None:
        super().__init__(message)
        self.message = message
        self.position = position


def parse_selector(text: str) -> tuple[Matcher, ...]:
    """Parse a selector; an empty string or `{}` selects everything."""
    return _Parser(text).parse()


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def parse(self) -> tuple[Matcher, ...]:
        self._skip_space()
        if self._at_end():
            return ()
        self._expect("{")
        matchers: list[Matcher] = []
        self._skip_space()
        while not self._accept("}"):
            matchers.append(self._matcher())
            self._skip_space()
            if not self._accept(","):
                self._expect("}")
                break
            self._skip_space()
        self._skip_space()
        if not self._at_end():
            raise SelectorError("unexpected text after '}'", self.pos)
        return tuple(matchers)

    def _matcher(self) -> Matcher:
        name = self._label_name()
        self._skip_space()
        op = self._op()
        self._skip_space()
        position = self.pos
        return Matcher(name, op, self._string(), position)

    def _label_name(self) -> str:
        found = LABEL_NAME.match(self.text, self.pos)
        if not found:
            raise SelectorError("expected a label name", self.pos)
        self.pos = found.end()
        return found.group()

    def _op(self) -> Op:
        # Two-character operators first, so "=~" is not read as "=".
        for op in (Op.RE, Op.NRE, Op.NE, Op.EQ):
            if self.text.startswith(op.value, self.pos):
                self.pos += len(op.value)
                return op
        raise SelectorError("expected one of =, !=, =~, !~", self.pos)

    def _string(self) -> str:
        start = self.pos
        quote = self.text[self.pos] if not self._at_end() else ""
        if quote not in ('"', "'", "`"):
            raise SelectorError("expected a quoted string", start)
        self.pos += 1
        chars: list[str] = []
        while not self._accept(quote):
            if self._at_end() or (quote != "`" and self.text[self.pos] == "\n"):
                raise SelectorError("unterminated string", start)
            if quote != "`" and self.text[self.pos] == "\\":
                chars.append(self._escape())
            else:
                chars.append(self.text[self.pos])
                self.pos += 1
        return "".join(chars)

    def _escape(self) -> str:
        start = self.pos
        self.pos += 1
        char = self.text[self.pos : self.pos + 1]
        self.pos += 1
        if char in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[char]
        if char in _HEX_ESCAPE_DIGITS:
            return self._code_point(start, self._digits(_HEX_ESCAPE_DIGITS[char], 16))
        if char and char in "01234567":
            self.pos -= 1
            value = self._digits(3, 8)
            # Go limits octal escapes to one byte.
            return self._code_point(start, value if value is not None and value <= 0o377 else None)
        raise SelectorError(f"unknown escape sequence \\{char}", start)

    def _digits(self, count: int, base: int) -> int | None:
        digits = self.text[self.pos : self.pos + count]
        self.pos += count
        try:
            return int(digits, base) if len(digits) == count else None
        except ValueError:
            return None

    def _code_point(self, start: int, value: int | None) -> str:
        if value is None or value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
            raise SelectorError("invalid escape sequence", start)
        return chr(value)

    def _expect(self, token: str) -> None:
        if not self._accept(token):
            found = repr(self.text[self.pos]) if not self._at_end() else "end of input"
            raise SelectorError(f"expected '{token}', found {found}", self.pos)

    def _accept(self, token: str) -> bool:
        if self.text.startswith(token, self.pos):
            self.pos += len(token)
            return True
        return False

    def _skip_space(self) -> None:
        while not self._at_end() and self.text[self.pos].isspace():
            self.pos += 1

    def _at_end(self) -> bool:
        return self.pos >= len(self.text)

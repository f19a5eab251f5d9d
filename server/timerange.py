"""Time parameters: Unix seconds, RFC 3339, `now` and `now-15m` style offsets."""

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

DEFAULT_FROM = "now-1h"
DEFAULT_UNTIL = "now"

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_RELATIVE = re.compile(r"now(?:([+-])(\d+)([smhdw]))?")
_UNIX = re.compile(r"\d+(?:\.\d*)?")
# RFC 3339 insists on a full date, a full time and an offset; fromisoformat alone
# would also take a bare date or a local time and silently guess the zone.
_RFC3339 = re.compile(r"(\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


class TimeRangeError(ValueError):
    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"invalid '{parameter}': {message}")
        self.parameter = parameter


@dataclass(frozen=True)
class TimeRange:
    start: datetime
    end: datetime


def parse_time(text: str, now: datetime) -> datetime:
    """Parse one time value into an aware UTC datetime; raises ValueError."""
    text = text.strip()
    if relative := _RELATIVE.fullmatch(text):
        try:
            return now + _offset(*relative.groups())
        except OverflowError:
            raise ValueError(f"{text!r} is out of range") from None
    if _UNIX.fullmatch(text):
        return _from_unix(text)
    if rfc := _RFC3339.fullmatch(text):
        return _from_rfc3339(*rfc.groups())
    raise ValueError(f"{text!r} is neither Unix seconds, RFC 3339 nor now[-<n><s|m|h|d|w>]")


def parse_range(start: str, end: str, now: datetime | None = None) -> TimeRange:
    """Parse `from` and `until` against one clock reading, so `now` means the same in both."""
    now = now or datetime.now(UTC)
    parsed = TimeRange(_parse_param("from", start, now), _parse_param("until", end, now))
    if parsed.start > parsed.end:
        raise TimeRangeError("from", f"{start!r} is after until={end!r}")
    return parsed


def _parse_param(parameter: str, text: str, now: datetime) -> datetime:
    try:
        return parse_time(text, now)
    except ValueError as error:
        raise TimeRangeError(parameter, str(error)) from None


def _offset(sign: str | None, amount: str | None, unit: str | None) -> timedelta:
    if sign is None or amount is None or unit is None:
        return timedelta()
    delta = timedelta(**{_UNITS[unit]: int(amount)})
    return -delta if sign == "-" else delta


def _from_unix(text: str) -> datetime:
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except (OverflowError, OSError) as error:
        raise ValueError(f"{text!r} is out of range") from error


def _from_rfc3339(base: str, fraction: str | None, offset: str) -> datetime:
    # Python keeps microseconds; RFC 3339 allows any number of fraction digits.
    micros = (fraction or "")[:7].ljust(7, "0") if fraction else ""
    zone = "+00:00" if offset in ("Z", "z") else offset
    try:
        return datetime.fromisoformat(f"{base.replace('t', 'T')}{micros}{zone}").astimezone(UTC)
    except ValueError as error:
        raise ValueError(f"{base}: {error}") from None

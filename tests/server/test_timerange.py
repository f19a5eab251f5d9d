from datetime import UTC, datetime, timedelta

import pytest

from podflame.server.timerange import (
    DEFAULT_FROM,
    DEFAULT_UNTIL,
    TimeRangeError,
    parse_range,
    parse_time,
)

NOW = datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "offset"),
    [
        ("now", timedelta()),
        (" now ", timedelta()),
        ("now-30s", timedelta(seconds=-30)),
        ("now-15m", timedelta(minutes=-15)),
        ("now-1h", timedelta(hours=-1)),
        ("now-7d", timedelta(days=-7)),
        ("now-2w", timedelta(weeks=-2)),
        ("now+5m", timedelta(minutes=5)),
    ],
)
def test_relative_to_now(text: str, offset: timedelta) -> None:
    assert parse_time(text, NOW) == NOW + offset


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", datetime(1970, 1, 1, tzinfo=UTC)),
        ("1700000000", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        ("1700000000.25", datetime(2023, 11, 14, 22, 13, 20, 250000, tzinfo=UTC)),
        ("2024-01-02T03:04:05Z", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02t03:04:05z", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02 03:04:05+02:00", datetime(2024, 1, 2, 1, 4, 5, tzinfo=UTC)),
        ("2024-01-02T03:04:05.123456789Z", datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)),
        ("2024-01-02T03:04:05.5-01:30", datetime(2024, 1, 2, 4, 34, 5, 500000, tzinfo=UTC)),
    ],
)
def test_absolute_times(text: str, expected: datetime) -> None:
    parsed = parse_time(text, NOW)
    assert parsed == expected
    assert parsed.tzinfo == UTC


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "now-5y",
        "now-",
        "now-1.5h",
        "-1",
        "1e9",
        "2024-01-02",
        "2024-01-02T03:04:05",  # RFC 3339 requires an offset
        "2024-13-02T03:04:05Z",
        "9" * 30,
        "now-99999999999999d",
    ],
)
def test_bad_times(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time(text, NOW)


def test_defaults_are_the_last_hour() -> None:
    assert parse_range(DEFAULT_FROM, DEFAULT_UNTIL, NOW).start == NOW - timedelta(hours=1)
    assert parse_range(DEFAULT_FROM, DEFAULT_UNTIL, NOW).end == NOW


def test_errors_name_the_parameter() -> None:
    with pytest.raises(TimeRangeError) as raised:
        parse_range("now", "soon", NOW)
    assert raised.value.parameter == "until"
    assert "'until'" in str(raised.value)


def test_from_after_until_is_an_error() -> None:
    with pytest.raises(TimeRangeError) as raised:
        parse_range("now", "now-1m", NOW)
    assert raised.value.parameter == "from"

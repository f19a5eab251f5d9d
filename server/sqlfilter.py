"""The WHERE clause selecting the samples of a ProfileQuery.

User input reaches SQL only as bound parameters ({name:Type} placeholders that
clickhouse-connect sends apart from the statement); the SQL text itself is
built from fixed fragments and label names checked against LABEL_NAME.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from podflame.server.schema import (
    LABEL_COLUMNS,
    PID_LABEL,
    SERVICE_NAME_LABEL,
    SERVICE_NAME_SQL,
)
from podflame.server.selector import LABEL_NAME, Matcher, Op
from podflame.server.store import ProfileQuery
from podflame.server.timerange import TimeRange

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class Filter:
    conditions: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def sql(self) -> str:
        return " AND ".join(self.conditions) or "1"

    def bind(self, value: Any) -> str:
        """Add a parameter and return its name."""
        name = f"p{len(self.parameters)}"
        self.parameters[name] = value
        return name


def sample_filter(query: ProfileQuery) -> Filter:
    where = Filter()
    where.conditions.append(f"profile_type = {{{where.bind(query.profile_type)}:String}}")
    add_time_range(where, query.time_range)
    for matcher in query.matchers:
        where.conditions.append(_condition(where, matcher))
    return where


def add_time_range(where: Filter, time_range: TimeRange) -> None:
    """Select the rows whose `timestamp` is in the range."""
    # Half-open [from, until): adjacent ranges never count a sample twice.
    start = where.bind(_millis(time_range.start))
    end = where.bind(_millis(time_range.end))
    where.conditions.append(f"timestamp >= fromUnixTimestamp64Milli({{{start}:Int64}}, 'UTC')")
    where.conditions.append(f"timestamp < fromUnixTimestamp64Milli({{{end}:Int64}}, 'UTC')")


def regex_check(pattern: str) -> Filter:
    """A statement that fails exactly when ClickHouse cannot compile `pattern`."""
    check = Filter()
    check.conditions.append(f"match('', {{{check.bind(pattern)}:String}})")
    return check


def _condition(where: Filter, matcher: Matcher) -> str:
    return matcher_condition(where, matcher, label_column(where, matcher.name))


def matcher_condition(where: Filter, matcher: Matcher, column: str) -> str:
    """The matcher applied to `column`, an SQL expression of type String."""
    if matcher.op.is_regex:
        test = f"match({column}, {{{where.bind(matcher.anchored_regex)}:String}})"
        return f"NOT {test}" if matcher.op is Op.NRE else test
    operator = "!=" if matcher.op is Op.NE else "="
    return f"{column} {operator} {{{where.bind(matcher.value)}:String}}"


def label_column(where: Filter, name: str, *, stored_service_name: bool = True) -> str:
    """The SQL expression reading label `name` as a string ('' when absent).

    `stored_service_name`: whether the table has the service_name column (samples does;
    the network tables derive it when read).
    """
    # The parser already enforces this; checked again because the name (for
    # column labels) is pasted into the SQL text.
    if not LABEL_NAME.fullmatch(name):
        raise ValueError(f"invalid label name {name!r}")
    if name in LABEL_COLUMNS:
        return name
    if name == PID_LABEL:
        return "toString(pid)"
    if name == SERVICE_NAME_LABEL:
        return SERVICE_NAME_LABEL if stored_service_name else SERVICE_NAME_SQL
    # A missing key reads as '', which is what PromQL means by an absent label.
    return f"labels[{{{where.bind(name)}:String}}]"


def _millis(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)

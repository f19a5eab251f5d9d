"""Each part's counters, exported through its own prometheus_client collector.

A part keeps its counters in a dataclass of ints whose fields carry their help
text (`counter`); `PartCounters` reads them at scrape time. The name of each
metric is ``<prefix>symbolizer_<field>_total``: the caller chooses the prefix
(the agent's is ``podflame_agent_``), and all parts share the ``symbolizer_``
namespace, so which part counts what can change without renaming a metric.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import field, fields
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


def counter(help_text: str) -> Any:
    """A counter field of a part's stats dataclass, starting at 0, with its help."""
    return field(default=0, metadata={"help": help_text})


class PartCounters(Collector):
    """One part's counters (a dataclass of `counter` fields) at /metrics."""

    def __init__(self, prefix: str, counters: DataclassInstance) -> None:
        self._prefix, self._counters = prefix, counters

    def collect(self) -> Iterator[Metric]:
        for item in fields(self._counters):
            yield CounterMetricFamily(
                f"{self._prefix}symbolizer_{item.name}",
                item.metadata.get("help", item.name),
                value=getattr(self._counters, item.name),
            )

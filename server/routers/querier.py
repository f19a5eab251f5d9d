"""POST /querier.v1.QuerierService/*: Pyroscope's query API, for Grafana (docs/grafana.md).

Connect unary calls in binary protobuf or JSON (server/connect.py) answered from the
same store, selectors and trees as /api/v1; server/querier.py translates. A token's
namespace restriction is ANDed into every selector, as /api/v1 does.
"""

import gzip
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import APIRouter, HTTPException, Request, Response
from google.protobuf.message import Message

from podflame.model.tree import diff_graph, flame_graph
from podflame.server import exports, querier
from podflame.server import querier_pb2 as pb
from podflame.server.connect import JSON, PROTO, ConnectError, error_response, unary
from podflame.server.deps import (
    DEFAULT_FLAMEGRAPH_NODES,
    NamespaceRestriction,
    QueryLimits,
    get_limits,
    get_profile_types,
    get_store,
    namespace_scope,
)
from podflame.server.errors import is_timeout
from podflame.server.profile_types import ProfileTypes
from podflame.server.pyroscope_types import UnknownTypeId, type_ids
from podflame.server.querier import QuerierError
from podflame.server.routers.profile_types import visible_types
from podflame.server.selector import Matcher, SelectorError
from podflame.server.store import ProfileQuery, ProfileStore, StorageError
from podflame.server.timerange import TimeRangeError

router = APIRouter(tags=["grafana"])

SERVICE = "/querier.v1.QuerierService/"
# Most label names, values and label sets one call returns.
MAX_LABELS = 10_000
# Selectors one label call may list: each is a query per profile type.
MAX_MATCHERS = 100

RequestT = TypeVar("RequestT", bound=Message)


@dataclass(frozen=True)
class Caller:
    """What every call needs: the store, the app's profile types, the caller's namespaces
    and the query limits."""

    store: ProfileStore
    profile_types: ProfileTypes
    scope: NamespaceRestriction
    limits: QueryLimits

    def resolve(self, text: str) -> str:
        try:
            return self.profile_types.resolve_type_id(text)
        except UnknownTypeId as error:
            raise QuerierError(str(error)) from None

    def query(self, type_text: str, selector: str, start: int, end: int) -> ProfileQuery:
        selection = querier.split_selector(selector)
        if not type_text and len(selection.type_ids) == 1:
            type_text = selection.type_ids[0]
        if not type_text:
            raise QuerierError("profile_typeID is required")
        return self._query(self.resolve(type_text), selection.matchers, start, end)

    def label_queries(self, selectors: Iterable[str], start: int, end: int) -> list[ProfileQuery]:
        """One query per selector and profile type it names (every type if none)."""
        queries = []
        selectors = list(selectors)
        if len(selectors) > MAX_MATCHERS:
            raise QuerierError(f"{len(selectors)} matchers: at most {MAX_MATCHERS} are read")
        for selector in selectors or [""]:
            selection = querier.split_selector(selector)
            if selection.type_ids:
                names = [self.resolve(text) for text in selection.type_ids]
            else:
                names = [item.podflame_name for item in self.profile_types.type_ids()]
            queries += [self._query(name, selection.matchers, start, end) for name in names]
        return queries

    def max_nodes(self, message: Any) -> int:
        """The request's max_nodes (see `clamp_nodes`)."""
        return self.clamp_nodes(message.max_nodes if message.HasField("max_nodes") else 0)

    def clamp_nodes(self, asked: int) -> int:
        """`asked`, or /api/v1/flamegraph's default for 0, at most --max-nodes.

        Clamped rather than refused: Grafana sends its own setting, and an error would
        leave its panel empty.
        """
        return min(asked if asked > 0 else DEFAULT_FLAMEGRAPH_NODES, self.limits.max_nodes)

    def _query(
        self, name: str, matchers: tuple[Matcher, ...], start: int, end: int
    ) -> ProfileQuery:
        time_range = querier.time_range(start, end)
        self.limits.check_range(time_range, "start")
        return ProfileQuery(name, self.scope.restrict(matchers), time_range)


def caller_of(request: Request) -> Caller:
    return Caller(
        get_store(request),
        get_profile_types(request),
        namespace_scope(request),
        get_limits(request),
    )


def _connect_error(error: Exception) -> ConnectError | None:
    if isinstance(error, querier.Unsupported):
        return ConnectError("unimplemented", str(error))
    if isinstance(error, QuerierError | TimeRangeError):
        return ConnectError("invalid_argument", str(error))
    if isinstance(error, SelectorError):
        message = f"invalid selector: {error.message} (at position {error.position})"
        return ConnectError("invalid_argument", message)
    if isinstance(error, HTTPException) and error.status_code == 400:
        return ConnectError("invalid_argument", str(error.detail))
    if isinstance(error, StorageError):
        if is_timeout(error):
            message = "query timed out: narrow the selector or the time range"
            return ConnectError("deadline_exceeded", message)
        return ConnectError("unavailable", str(error))
    return None


def _route(
    method: str, message_type: type[RequestT], summary: str
) -> Callable[[Callable[[Caller, RequestT], Message]], Callable[[Caller, RequestT], Message]]:
    """Register `handle` as the Connect unary call SERVICE + method."""

    def register(
        handle: Callable[[Caller, RequestT], Message],
    ) -> Callable[[Caller, RequestT], Message]:
        async def endpoint(request: Request) -> Response:
            caller = caller_of(request)
            return await unary(
                request, message_type, lambda message: handle(caller, message), _connect_error
            )

        router.add_api_route(
            SERVICE + method,
            endpoint,
            methods=["POST"],
            summary=summary,
            response_class=Response,
            openapi_extra=_body(message_type),
            responses=_RESPONSES,
            name=f"querier_{method}",
        )
        return handle

    return register


def _body(message_type: type[Message]) -> dict[str, Any]:
    name = message_type.DESCRIPTOR.name
    description = f"A Pyroscope querier.v1 {name}, protobuf or its JSON mapping."
    content = {PROTO: {"schema": {"type": "string", "format": "binary"}}, JSON: {}}
    return {"requestBody": {"required": True, "description": description, "content": content}}


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The response message, in the request's codec."},
    400: {"description": 'Connect error {"code": "invalid_argument", "message": ...}.'},
    415: {"description": "Connect error unimplemented: neither protobuf nor JSON."},
    503: {"description": "Connect error unavailable: storage down."},
}


@_route("ProfileTypes", pb.ProfileTypesRequest, "Profile types (Grafana's health check)")
def profile_types(caller: Caller, _: pb.ProfileTypesRequest) -> pb.ProfileTypesResponse:
    # The types /api/v1/profile-types shows this caller.
    types = visible_types(caller.store, caller.profile_types, caller.scope, caller.limits)
    return pb.ProfileTypesResponse(profile_types=[querier.type_message(t) for t in type_ids(types)])


@_route("LabelNames", pb.LabelNamesRequest, "Label names")
def label_names(caller: Caller, message: pb.LabelNamesRequest) -> pb.LabelNamesResponse:
    names: set[str] = set()
    for query in caller.label_queries(message.matchers, message.start, message.end):
        names.update(caller.store.label_names(query, MAX_LABELS))
    return pb.LabelNamesResponse(names=sorted(names)[:MAX_LABELS])


@_route("LabelValues", pb.LabelValuesRequest, "Values of one label")
def label_values(caller: Caller, message: pb.LabelValuesRequest) -> pb.LabelValuesResponse:
    if not message.name:
        raise QuerierError("name is required")
    values: set[str] = set()
    if not message.name.startswith("__"):  # Pyroscope's own labels: podflame stores none
        for query in caller.label_queries(message.matchers, message.start, message.end):
            values.update(caller.store.label_values(query, message.name, MAX_LABELS))
    # Sorted as the store sorts them (pid numerically).
    ordered = sorted(values, key=lambda v: (int(v), v) if v.isdigit() else (0, v))
    return pb.LabelValuesResponse(names=ordered[:MAX_LABELS])


@_route("Series", pb.SeriesRequest, "Label sets of the series")
def series(caller: Caller, message: pb.SeriesRequest) -> pb.SeriesResponse:
    sets: dict[tuple[tuple[str, str], ...], None] = {}
    ids = {item.podflame_name: item for item in caller.profile_types.type_ids()}
    for query in caller.label_queries(message.matchers, message.start, message.end):
        names = list(message.label_names) or caller.store.label_names(query, MAX_LABELS)
        group_by = querier.check_group_by([n for n in names if not n.startswith("__")])
        # One step over the whole range: only the label sets matter.
        points = querier.check_points(
            caller.store.series(
                query, querier.WHOLE_RANGE_MS, group_by, querier.MAX_SERIES_POINTS + 1
            )
        )
        type_id = ids.get(query.profile_type)
        own = {"__profile_type__": type_id.id, "__name__": type_id.name} if type_id else {}
        wanted = {n: v for n, v in own.items() if not message.label_names or n in names}
        for point in points:
            pairs = {**wanted, **dict(zip(group_by, point.key, strict=True))}
            sets[tuple(sorted((n, v) for n, v in pairs.items() if v))] = None
            if len(sets) >= MAX_LABELS:
                break
    labels_set = [
        pb.Labels(labels=[pb.LabelPair(name=n, value=v) for n, v in pairs]) for pairs in sets
    ]
    return pb.SeriesResponse(labels_set=labels_set)


@_route("SelectMergeStacktraces", pb.SelectMergeStacktracesRequest, "Flame graph")
def select_merge_stacktraces(
    caller: Caller, message: pb.SelectMergeStacktracesRequest
) -> pb.SelectMergeStacktracesResponse:
    if message.format == pb.PROFILE_FORMAT_TREE:
        raise ConnectError("unimplemented", "format TREE is not served; ask for FLAMEGRAPH")
    site = querier.call_site(message)
    query = caller.query(message.profile_typeID, message.label_selector, message.start, message.end)
    graph = merged_flame_graph(caller.store, query, caller.max_nodes(message), site)
    return pb.SelectMergeStacktracesResponse(flamegraph=graph)


def merged_flame_graph(
    store: ProfileStore, query: ProfileQuery, max_nodes: int, site: querier.CallSite = ()
) -> pb.FlameGraph:
    stacks = querier.under_call_site(store.stacks(query), site)
    tree = flame_graph(((stack.frames, stack.value) for stack in stacks), max_nodes)
    return querier.flame_graph(tree)


@_route("SelectMergeProfile", pb.SelectMergeProfileRequest, "Merged profile as pprof")
def select_merge_profile(caller: Caller, message: pb.SelectMergeProfileRequest) -> pb.Profile:
    site = querier.call_site(message)
    query = caller.query(message.profile_typeID, message.label_selector, message.start, message.end)
    stacks = querier.under_call_site(caller.store.stacks(query), site)
    data = exports.pprof(stacks, caller.profile_types.require(query.profile_type), query.time_range)
    return pb.Profile.FromString(gzip.decompress(data))


@_route("SelectSeries", pb.SelectSeriesRequest, "Value over time, per group")
def select_series(caller: Caller, message: pb.SelectSeriesRequest) -> pb.SelectSeriesResponse:
    if message.aggregation == pb.TIME_SERIES_AGGREGATION_TYPE_AVERAGE:
        raise QuerierError("average aggregation is not supported: podflame stores sums")
    selector = message.stack_trace_selector
    if selector.call_site or selector.HasField("go_pgo"):  # empty: every stack, as asked
        raise querier.Unsupported("stack_trace_selector is not supported in SelectSeries")
    query = caller.query(message.profile_typeID, message.label_selector, message.start, message.end)
    group_by = querier.check_group_by(message.group_by)
    step_ms = querier.series_step_ms(message.step, query.time_range)
    limit = message.limit if message.HasField("limit") and message.limit > 0 else 0
    points = querier.check_points(
        caller.store.series(query, step_ms, group_by, querier.MAX_SERIES_POINTS + 1)
    )
    series_list = querier.series_messages(points, group_by, limit or querier.MAX_SERIES)
    return pb.SelectSeriesResponse(series=series_list)


@_route("Diff", pb.DiffRequest, "Two selections in one flame graph")
def diff(caller: Caller, message: pb.DiffRequest) -> pb.DiffResponse:
    sides = (message.left, message.right)
    sites = [querier.call_site(side) for side in sides]
    left, right = (
        caller.query(side.profile_typeID, side.label_selector, side.start, side.end)
        for side in sides
    )
    graph = merged_diff(caller.store, left, right, caller.max_nodes(message.left), sites)
    return pb.DiffResponse(flamegraph=graph)


def merged_diff(
    store: ProfileStore,
    left: ProfileQuery,
    right: ProfileQuery,
    max_nodes: int,
    sites: Sequence[querier.CallSite] = ((), ()),
) -> pb.FlameGraphDiff:
    if left.profile_type != right.profile_type:
        raise QuerierError("left and right must be of the same profile type")
    sides = [
        [(stack.frames, stack.value) for stack in querier.under_call_site(store.stacks(q), site)]
        for q, site in zip((left, right), sites, strict=True)
    ]
    return querier.flame_graph_diff(diff_graph(sides[0], sides[1], max_nodes))


@router.post(SERVICE + "{method}", include_in_schema=False)
async def other_method(method: str) -> Response:
    """Pyroscope's other calls (span profiles, heatmaps, stats): Connect unimplemented,
    rather than the UI's 405 for a POST."""
    message = f"podflame does not serve querier.v1.QuerierService/{method} (see docs/grafana.md)"
    return error_response(ConnectError("unimplemented", message))

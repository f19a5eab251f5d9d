"""The read side's SQL, as templates over `{db}` and a sample filter's `{where}`.

Every query filters `samples` first with sqlfilter.sample_filter, whose
conditions on (profile_type, namespace, workload, pod, node, timestamp) follow
the table's sort key, so ClickHouse reads only the granules of the selected
range; it moves the cheap conditions to PREWHERE by itself (optimize_move_to_prewhere).
Label names pasted in come from schema.LABEL_COLUMNS, never from a request.
"""

from podflame.server.schema import LABEL_COLUMNS

# One row per distinct stack: the store looks the frames up separately (and
# caches them), which is cheaper than joining the stacks table every time.
STACK_VALUES = (
    "SELECT stack_hash, sum(value) AS value FROM {db}.samples WHERE {where} GROUP BY stack_hash"
)

# The stacks table may hold a stack twice until ReplacingMergeTree merges.
FRAMES = """
SELECT hash, any((frames, details)) FROM {db}.stacks WHERE hash IN {{hashes:Array(UInt64)}}
GROUP BY hash
"""

# Frames joined to the summed stacks, for aggregating over frames in SQL. The
# IN lets the stacks table's primary key skip the stacks not selected.
_STACK_TOTALS = """
SELECT s.frames AS frames, a.value AS value
FROM ({stack_values}) AS a
INNER JOIN (
    SELECT hash, any(frames) AS frames FROM {db}.stacks
    WHERE hash IN (SELECT stack_hash FROM {db}.samples WHERE {where})
    GROUP BY hash
) AS s ON s.hash = a.stack_hash
"""

# arrayDistinct: a function on a stack several times (recursion) adds that
# stack's value to its total once.
TOP = """
SELECT name, sumIf(value, leaf = name) AS self, sum(value) AS total
FROM (
    SELECT arrayJoin(arrayDistinct(frames)) AS name, frames[-1] AS leaf, value
    FROM ({stack_totals})
)
GROUP BY name
ORDER BY self DESC, total DESC, name
LIMIT {{limit:UInt32}}
"""

TOTAL = "SELECT sum(value) FROM {db}.samples WHERE {where}"

# Buckets start at multiples of the step since the epoch, whatever the range.
TIMELINE = """
SELECT toUnixTimestamp(toStartOfInterval(timestamp, toIntervalSecond({{step:UInt32}}))) AS t,
       sum(value)
FROM {db}.samples WHERE {where}
GROUP BY t ORDER BY t
"""

# Per group (an Array(String) of label values) and step of {{step_ms}} milliseconds.
SERIES = """
SELECT intDiv(toUnixTimestamp64Milli(timestamp), {{step_ms:UInt64}}) * {{step_ms:UInt64}} AS t,
       {key} AS key, sum(value)
FROM {db}.samples WHERE {where}
GROUP BY key, t ORDER BY key, t LIMIT {{limit:UInt32}}
"""

# One row: per label column whether any selected sample has it, then pid, then
# the Map keys with a non-empty value (at most MAX_MAP_KEYS of them).
MAX_MAP_KEYS = 10_000
_HAS_COLUMN = ", ".join(f"max({name} != '')" for name in LABEL_COLUMNS)
LABEL_NAMES = f"""
SELECT {_HAS_COLUMN}, max(pid != 0),
       groupUniqArrayArray({MAX_MAP_KEYS})(mapKeys(mapFilter((k, v) -> v != '', labels)))
FROM {{db}}.samples WHERE {{where}}
"""

# {value} and {order} differ for pid, a number.
LABEL_VALUES = """
SELECT DISTINCT {value} AS v FROM {db}.samples WHERE {where}
ORDER BY {order} LIMIT {{limit:UInt32}}
"""


def stack_totals(db: str, where: str) -> str:
    values = STACK_VALUES.format(db=db, where=where)
    return _STACK_TOTALS.format(db=db, where=where, stack_values=values)

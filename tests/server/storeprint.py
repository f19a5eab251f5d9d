"""A fingerprint of everything a store holds, to prove a rejected request wrote nothing."""

from clickhouse_connect.driver.client import Client

Fingerprint = dict[str, tuple[int, int]]


def fingerprint(client: Client, database: str) -> Fingerprint:
    """(rows, order-independent hash of all rows) of every table of the database.

    Every table, whichever exists now (samples, stacks, profile_types, and any a
    later migration adds), so a new table is covered without changing this. One
    query for the tables, one for all of them: a query costs chDB milliseconds of
    its own, and the fuzz tests take a fingerprint per request.
    """
    tables = client.query(
        "SELECT name FROM system.tables WHERE database = {db:String} ORDER BY name",
        parameters={"db": database},
    ).result_rows
    # schema_version is written by migrations, never by a request.
    names = [table for (table,) in tables if table != "schema_version"]
    if not names:
        return {}
    union = " UNION ALL ".join(
        f"SELECT {index} AS table, count() AS rows, sum(cityHash64(*)) AS digest "
        f"FROM `{database}`.`{name}`"
        for index, name in enumerate(names)
    )
    found: Fingerprint = {}
    for index, rows, digest in sorted(client.query(union).result_rows):
        if rows:  # a table created on first use (profile_types), still empty, holds nothing
            found[names[index]] = (int(rows), int(digest))
    return found


class StoreWatch:
    """The store's fingerprint before each request, read again only when it may have changed.

    A rejected request is checked to have left the store as it was, so the
    fingerprint read after it is also the one before the next request: a rejected
    request costs one read, not two. After any other answer (a write may have been
    stored) the next request reads the store anew.
    """

    def __init__(self, client: Client, database: str) -> None:
        self.client, self.database = client, database
        self._known: Fingerprint | None = None

    def before(self) -> None:
        """Call before each request."""
        if self._known is None:
            self._known = fingerprint(self.client, self.database)

    def rejected_wrote_nothing(self) -> bool:
        """After a rejected request: whether the store is exactly as before it."""
        after = fingerprint(self.client, self.database)
        unchanged = after == self._known
        self._known = after
        return unchanged

    def accepted(self) -> None:
        """After a request that may have written."""
        self._known = None

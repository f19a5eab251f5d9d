"""A fingerprint of everything a store holds, to prove a rejected request wrote nothing."""

from clickhouse_connect.driver.client import Client

Fingerprint = dict[str, tuple[int, int]]


def fingerprint(client: Client, database: str) -> Fingerprint:
    """(rows, order-independent hash of all rows) of every table of the database.

    Every table, whichever exists now (samples, stacks, profile_types, and any a
    later migration adds), so a new table is covered without changing this.
    """
    tables = client.query(
        "SELECT name FROM system.tables WHERE database = {db:String} ORDER BY name",
        parameters={"db": database},
    ).result_rows
    found: Fingerprint = {}
    for (table,) in tables:
        if table == "schema_version":
            continue  # written by migrations, never by a request
        rows, digest = client.query(
            f"SELECT count(), sum(cityHash64(*)) FROM `{database}`.`{table}`"
        ).result_rows[0]
        if rows:  # a table created on first use (profile_types), still empty, holds nothing
            found[table] = (int(rows), int(digest))
    return found

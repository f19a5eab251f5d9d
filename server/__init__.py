"""The podflame server: ingest, ClickHouse storage and the HTTP API."""

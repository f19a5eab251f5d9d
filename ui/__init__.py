"""The web UI: static files served by the server at /."""

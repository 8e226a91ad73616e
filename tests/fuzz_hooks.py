"""Schemathesis hooks for tests/fuzz.sh: how to send the bodies it cannot
serialize by itself, and a bound on the claim's long-poll so a run fits."""

import schemathesis


@schemathesis.serializer("application/wasm", "application/gzip")
def raw_bytes(ctx, value):
    """Pack uploads: whatever was generated, as bytes (the server must refuse
    what is not a component or an archive with a 4xx)."""
    if isinstance(value, bytes):
        return value
    return str(value).encode()


@schemathesis.hook
def map_query(ctx, query):
    """A worker's claim waits up to 30 s for work; fuzzing needs answers."""
    if ctx.operation is not None and ctx.operation.path.endswith("/claim"):
        query = dict(query or {})
        query["wait_ms"] = 0
    return query

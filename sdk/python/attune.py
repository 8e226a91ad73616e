"""Attune's Python SDK: logging, execution context, secrets and key-value state for actions.

An action is a Python class named ``WitWorld`` that implements the functions its
WIT world exports (``componentize-py`` generates the ``wit_world`` module it
derives from). This module wraps the ``attune:action`` host interfaces every
action may import::

    import attune

    attune.info("resizing", width=640, height=480)
    ctx = attune.context()   # ctx.id, ctx.action, ctx.attempt
    token = attune.secret("slack_token")        # granted to the pack
    runs = attune.kv_increment("runs", 1)       # state kept across runs
    reply = attune.post("https://hooks.slack.com/…", json={"text": "hi"})  # needs wasi:http

``get``/``post``/``request`` need the world to import
``wasi:http/outgoing-handler`` (``attune action new --http`` sets that up);
the other helpers work in every world.

A host call that fails raises ``wit_world.types.Err`` whose ``value`` says why.

``attune action build`` puts this module on the build path; nothing to install.
"""

import json as _json
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from wit_world.imports import context as _context
from wit_world.imports import kv as _kv
from wit_world.imports import log as _log
from wit_world.imports import secrets as _secrets
from componentize_py_types import Err

Execution = _context.Execution
"""The execution a call belongs to: ``id``, ``action`` (``<pack>.<action>``), ``attempt``."""

_LEVELS = {
    "trace": _log.Level.TRACE,
    "debug": _log.Level.DEBUG,
    "info": _log.Level.INFO,
    "warn": _log.Level.WARN,
    "error": _log.Level.ERROR,
}


def log(level: str, message: str, **fields: Any) -> None:
    """Records a log line on the current execution.

    ``level`` is one of ``trace``, ``debug``, ``info``, ``warn``, ``error``;
    keyword arguments become the line's fields (values are turned into text).
    """
    try:
        wit_level = _LEVELS[level]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(_LEVELS)}") from None
    _log.log(wit_level, message, [_log.Field(key, str(value)) for key, value in fields.items()])


def trace(message: str, **fields: Any) -> None:
    """Records a ``trace`` line."""
    log("trace", message, **fields)


def debug(message: str, **fields: Any) -> None:
    """Records a ``debug`` line."""
    log("debug", message, **fields)


def info(message: str, **fields: Any) -> None:
    """Records an ``info`` line."""
    log("info", message, **fields)


def warn(message: str, **fields: Any) -> None:
    """Records a ``warn`` line."""
    log("warn", message, **fields)


def error(message: str, **fields: Any) -> None:
    """Records an ``error`` line."""
    log("error", message, **fields)


def context() -> Execution:
    """Returns the execution that is running: its id, action and attempt."""
    return _context.current()


def secret(name: str) -> str:
    """The value of the secret ``name`` the action's pack is granted.

    Whatever the action prints, logs or returns has the value replaced by ``********``.
    """
    return _secrets.get(name)


def kv_get(key: str) -> Optional[str]:
    """The value of ``key`` in the pack's key-value store, or ``None``."""
    return _kv.get(key)


def kv_set(key: str, value: str, ttl_ms: Optional[int] = None) -> None:
    """Sets ``key`` to ``value``, for ``ttl_ms`` milliseconds when given."""
    _kv.set(key, value, ttl_ms)


def kv_delete(key: str) -> bool:
    """Removes ``key``; ``True`` when it was set."""
    return _kv.delete(key)


def kv_keys(prefix: str = "") -> List[str]:
    """The keys starting with ``prefix``, in order (at most 1,000)."""
    return _kv.list_keys(prefix)


def kv_increment(key: str, delta: int = 1) -> int:
    """Adds ``delta`` to the whole number at ``key`` (absent counts as 0); returns the sum."""
    return _kv.increment(key, delta)


class HttpError(Exception):
    """A request that got no response: denied by the pack's grant, a bad URL, a
    connection or TLS failure, a timeout or a limit of the host."""


class Response:
    """An HTTP response: ``status``, ``headers`` (lowercase names) and ``body`` bytes."""

    def __init__(self, status: int, headers: List[Tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: str) -> Optional[str]:
        """The first value of header ``name`` (any case), or ``None``."""
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)

    def text(self) -> str:
        """The body as UTF-8 text (invalid bytes replaced)."""
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return _json.loads(self.body)

    @property
    def ok(self) -> bool:
        """Whether the status is 2xx."""
        return 200 <= self.status < 300


def get(url: str, headers: Optional[Dict[str, str]] = None, timeout: Optional[float] = None) -> Response:
    """GETs ``url``; see ``request``."""
    return request("GET", url, headers=headers, timeout=timeout)


def post(
    url: str,
    body: Optional[bytes] = None,
    json: Any = None,
    headers: Optional[Dict[str, str]] = None,
    timeout: Optional[float] = None,
) -> Response:
    """POSTs ``body`` (or ``json``, serialized with its content type) to ``url``; see ``request``."""
    return request("POST", url, headers=headers, body=body, json=json, timeout=timeout)


_CHUNK = 4096

# Imported when the module loads: componentize-py bundles the bindings a build
# imports up front, so a later import would not find them. Worlds without
# wasi:http have no such module, and only `request` needs it.
try:
    from wit_world.imports import outgoing_handler as _handler
    from wit_world.imports import streams as _streams
    from wit_world.imports import types as _types

    _http: Optional[tuple] = (_handler, _streams, _types)
    _METHODS = {
        "GET": _types.Method_Get,
        "HEAD": _types.Method_Head,
        "POST": _types.Method_Post,
        "PUT": _types.Method_Put,
        "DELETE": _types.Method_Delete,
        "OPTIONS": _types.Method_Options,
        "PATCH": _types.Method_Patch,
    }
except ImportError:
    _http = None


def request(
    method: str,
    url: str,
    headers: Optional[Dict[str, str]] = None,
    body: Optional[bytes] = None,
    json: Any = None,
    timeout: Optional[float] = None,
) -> Response:
    """Sends one HTTP request through ``wasi:http`` and reads the whole response.

    The host lets through only what the pack is granted (``allowed_outbound_hosts``
    in pack.toml, ``--allow-outbound`` with ``attune action run``), follows no
    redirect and caps response bytes and requests per execution; past any of
    that this raises ``HttpError``. ``timeout`` (seconds) bounds connecting and
    the wait for each byte, within the host's own caps.
    """
    if _http is None:
        raise HttpError(
            "this action's world does not import wasi:http/outgoing-handler; "
            "add `import wasi:http/outgoing-handler@0.2.12;` to it (see `attune action new --http`)"
        )
    outgoing_handler, streams, http = _http

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise HttpError(f"not an http(s) URL: {url!r}")
    fields = dict((k.lower(), v) for k, v in (headers or {}).items())
    if json is not None:
        body = _json.dumps(json).encode()
        fields.setdefault("content-type", "application/json")
    if isinstance(body, str):
        body = body.encode()
    if body is not None and "content-length" not in fields:
        # Sent with its length, not chunked: some servers refuse chunked requests.
        fields["content-length"] = str(len(body))
    try:
        outgoing = http.OutgoingRequest(http.Fields.from_list([(k, v.encode()) for k, v in fields.items()]))
    except Err as e:
        raise HttpError(f"bad header: {e.value}") from None
    upper = method.upper()
    outgoing.set_method(_METHODS.get(upper, lambda: http.Method_Other(upper))())
    outgoing.set_scheme(http.Scheme_Https() if parts.scheme == "https" else http.Scheme_Http())
    outgoing.set_authority(parts.netloc)
    outgoing.set_path_with_query(parts.path + (f"?{parts.query}" if parts.query else "") or "/")
    options = None
    if timeout is not None:
        nanos = int(timeout * 1e9)
        options = http.RequestOptions()
        options.set_connect_timeout(nanos)
        options.set_first_byte_timeout(nanos)
        options.set_between_bytes_timeout(nanos)
    outgoing_body = outgoing.body()
    try:
        pending = outgoing_handler.handle(outgoing, options)
    except Err as e:
        raise HttpError(_describe(e.value)) from None
    unsent = _write_body(http, outgoing_body, body)

    with pending:
        with pending.subscribe() as ready:
            ready.block()
        outer = pending.get()
    # Ok(Ok(response)) or Ok(Err(code)) once ready; Err(None) when taken before.
    if outer is None or isinstance(outer, Err):
        raise HttpError("the response was not ready or already taken")
    if isinstance(outer.value, Err):
        raise HttpError(_describe(outer.value.value))
    with outer.value.value as response:
        # A failed write usually means the request failed; its response says why.
        if unsent is not None:
            raise HttpError(f"sending the body: {unsent}")
        status = response.status()
        with response.headers() as fields_in:
            headers_in = [(k.lower(), v.decode("utf-8", "replace")) for k, v in fields_in.entries()]
        return Response(status, headers_in, _read_body(http, streams, response.consume()))


def _write_body(http: Any, outgoing_body: Any, body: Optional[bytes]) -> Any:
    """Writes ``body`` and finishes it; the stream error that stopped it, or ``None``."""
    unsent = None
    if body:
        with outgoing_body.write() as out:
            for at in range(0, len(body), _CHUNK):
                try:
                    out.blocking_write_and_flush(body[at : at + _CHUNK])
                except Err as e:
                    unsent = e.value
                    break
    try:
        http.OutgoingBody.finish(outgoing_body, None)
    except Err as e:
        unsent = unsent or e.value
    return unsent


def _read_body(http: Any, streams: Any, incoming: Any) -> bytes:
    """The whole body of a response, to the end of its stream."""
    chunks = []
    with incoming.stream() as stream:
        while True:
            try:
                chunks.append(stream.blocking_read(65536))
            except Err as e:
                if isinstance(e.value, streams.StreamError_Closed):
                    break
                code = http.http_error_code(e.value.value)
                reason = _describe(code) if code is not None else e.value.value.to_debug_string()
                raise HttpError(f"reading the body: {reason}") from None
    http.IncomingBody.finish(incoming).__exit__(None, None, None)
    return b"".join(chunks)


def _describe(code: Any) -> str:
    """``HttpRequestDenied``, ``ConnectionRefused`` … from a wasi:http error code."""
    name = type(code).__name__.removeprefix("ErrorCode_")
    value = getattr(code, "value", None)
    return f"{name}: {value}" if value not in (None, "") else name

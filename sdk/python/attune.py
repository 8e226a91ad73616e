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

A host call that fails raises ``wit_world.types.Err`` whose ``value`` says why.

``attune action build`` puts this module on the build path; nothing to install.
"""

from typing import Any, List, Optional

from wit_world.imports import context as _context
from wit_world.imports import kv as _kv
from wit_world.imports import log as _log
from wit_world.imports import secrets as _secrets

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

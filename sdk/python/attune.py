"""Attune's Python SDK: logging and execution context for actions.

An action is a Python class named ``WitWorld`` that implements the functions its
WIT world exports (``componentize-py`` generates the ``wit_world`` module it
derives from). This module wraps the ``attune:action`` host interfaces every
action may import::

    import attune

    attune.info("resizing", width=640, height=480)
    ctx = attune.context()   # ctx.id, ctx.action, ctx.attempt

``attune action build`` puts this module on the build path; nothing to install.
"""

from typing import Any

from wit_world.imports import context as _context
from wit_world.imports import log as _log

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

"""Drives Attune's MCP tools with the official MCP Python SDK (PyPI `mcp`).

    python3 tests/mcp_client.py VENV http URL          (token in ATTUNE_TOKEN)
    python3 tests/mcp_client.py VENV stdio ATTUNE [ARGS...]
                                (ATTUNE_SERVER, ATTUNE_TOKEN, XDG_CONFIG_HOME
                                 are handed to `ATTUNE mcp ARGS...`)

Run by the system Python, it first makes VENV (if it lacks the pinned SDK)
and runs itself again inside it, under a lock so concurrent tests share one
install. A failed install fails the run: a client that never ran proves
nothing.

Inside the venv it lists the tools, calls `core.echo` correctly and then
with invalid arguments (`message` not a string, an unknown field), and
closes the session. It exits non-zero when a step does not behave as the
specification says: the invalid call must be a tool result with `isError`
whose text names `/message`, and closing must log no warning (the SDK logs
"Session termination failed: <status>" when a DELETE answers other than 200
or 204). On success it prints one JSON document of what it saw, for the
test to check further.
"""

import asyncio
import fcntl
import json
import logging
import os
import subprocess
import sys

SDK = "mcp==1.30.0"


def bootstrap(venv: str) -> None:
    """Makes `venv` with the SDK unless it has it, then re-runs inside it."""
    python = os.path.join(venv, "bin", "python")
    if os.path.realpath(sys.prefix) == os.path.realpath(venv):
        return
    os.makedirs(os.path.dirname(os.path.abspath(venv)), exist_ok=True)
    with open(os.path.abspath(venv) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = os.path.join(venv, "installed")
        if not (os.path.exists(marker) and open(marker).read() == SDK):
            subprocess.run([sys.executable, "-m", "venv", "--clear", venv], check=True)
            install = subprocess.run(
                [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", SDK]
            )
            if install.returncode != 0:
                sys.exit(f"pip could not install {SDK} into {venv}: the MCP client tests need it")
            with open(marker, "w") as f:
                f.write(SDK)
    os.execv(python, [python, os.path.abspath(__file__), *sys.argv[1:]])


class Warnings(logging.Handler):
    """Keeps every warning the SDK logs."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(record.getMessage())


def fail(why: str, seen: object = None) -> None:
    sys.exit(f"mcp_client: {why}" + (f": {seen}" if seen is not None else ""))


async def exercise(session) -> dict:
    from mcp import types

    init = await session.initialize()
    if init.serverInfo.name != "attune":
        fail("the server is not attune", init.serverInfo)
    listed = await session.list_tools()
    names = [t.name for t in listed.tools]
    if "core.echo" not in names:
        fail("core.echo is not a tool", names)

    ok = await session.call_tool("core.echo", {"message": "from the python sdk"})
    if ok.isError or ok.structuredContent != {"result": "from the python sdk"}:
        fail("core.echo did not echo", ok.model_dump())

    # Invalid arguments are a tool execution error the model can read,
    # not a JSON-RPC error (which the SDK would raise as McpError).
    bad = await session.call_tool("core.echo", {"message": 5, "extra": True})
    if not bad.isError:
        fail("invalid arguments were not a tool error", bad.model_dump())
    text = "\n".join(c.text for c in bad.content if isinstance(c, types.TextContent))
    if "/message" not in text:
        fail("the tool error does not name /message", text)
    return {
        "protocol": init.protocolVersion,
        "tools": names,
        "ok": ok.model_dump(mode="json"),
        "invalid": {"isError": bad.isError, "text": text,
                    "structuredContent": bad.structuredContent},
    }


async def main(transport: str, args: list[str]) -> None:
    from mcp import ClientSession

    warnings = Warnings()
    logging.getLogger().addHandler(warnings)
    if transport == "http":
        import httpx
        from mcp.client.streamable_http import streamable_http_client

        (url,) = args
        token = os.environ["ATTUNE_TOKEN"]
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"},
                                     timeout=httpx.Timeout(30, read=120)) as http:
            async with streamable_http_client(url, http_client=http) as (read, write, _):
                async with ClientSession(read, write) as session:
                    seen = await exercise(session)
    elif transport == "stdio":
        from mcp.client.stdio import StdioServerParameters, stdio_client

        command, *rest = args
        env = {k: os.environ[k] for k in ("ATTUNE_SERVER", "ATTUNE_TOKEN", "XDG_CONFIG_HOME")
               if k in os.environ}
        server = StdioServerParameters(command=command, args=["mcp", *rest], env=env)
        async with stdio_client(server) as (read, write):
            async with ClientSession(read, write) as session:
                seen = await exercise(session)
    else:
        fail("the transport is http or stdio", transport)
    if warnings.seen:
        fail("the SDK warned", warnings.seen)
    print(json.dumps(seen))


if __name__ == "__main__":
    if len(sys.argv) < 4:
        fail("usage: mcp_client.py VENV http URL | VENV stdio ATTUNE [ARGS...]")
    bootstrap(sys.argv[1])
    asyncio.run(main(sys.argv[2], sys.argv[3:]))

"""An MCP client made with the official Python SDK (PyPI `mcp`), driven by tests/mcp.rs.

Usage: client.py TRANSPORT SCENARIO, with the scenario's argument on stdin, and TRANSPORT one of
  stdio      starts `$IRONCLAW_BIN --socket $IRONCLAW_SOCKET mcp`, as the README tells assistants;
  unix       Streamable HTTP at http://localhost/mcp over the daemon's socket;
  tcp        Streamable HTTP at $IRONCLAW_URL/mcp, with $IRONCLAW_TOKEN as the bearer token if set.
$MCP_MODE is the SDK's connect mode (`auto`: the newest revision; `legacy`: the initialize
handshake of 2025-11-25), $MCP_ORIGIN an Origin header to send. Each observation is one JSON line
on stdout; the test reads and judges them. Nothing is decided here.
"""

import json
import os
import sys

import anyio
import httpx2
import mcp.types as types
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client


def say(**observation):
    print(json.dumps(observation, default=str), flush=True)


# Every HTTP status the daemon answered with, for a test that must see a refusal's status: the
# SDK reports a refused request only as "Server returned an error response".
STATUSES = []


async def record_status(response):
    STATUSES.append(response.status_code)


def connect(transport, **options):
    mode = os.environ.get("MCP_MODE", "auto")
    headers = {}
    if os.environ.get("MCP_ORIGIN"):
        headers["Origin"] = os.environ["MCP_ORIGIN"]
    if transport == "stdio":
        server = StdioServerParameters(
            command=os.environ["IRONCLAW_BIN"], args=["--socket", os.environ["IRONCLAW_SOCKET"], "mcp"]
        )
        return Client(server, mode=mode, **options), None
    if transport == "unix":
        http = httpx2.AsyncClient(
            transport=httpx2.AsyncHTTPTransport(uds=os.environ["IRONCLAW_SOCKET"]),
            headers=headers,
            timeout=60,
            event_hooks={"response": [record_status]},
        )
        url = "http://localhost/mcp"
    else:
        if os.environ.get("IRONCLAW_TOKEN"):
            headers["Authorization"] = "Bearer " + os.environ["IRONCLAW_TOKEN"]
        http = httpx2.AsyncClient(headers=headers, timeout=60, event_hooks={"response": [record_status]})
        url = os.environ["IRONCLAW_URL"] + "/mcp"
    return Client(streamable_http_client(url, http_client=http), mode=mode, **options), http


def described(tool):
    return tool.model_dump(by_alias=True, exclude_none=True, mode="json")


def outcome(result):
    return {
        "isError": bool(result.is_error),
        "structured": result.structured_content,
        "text": [c.text for c in result.content if getattr(c, "type", None) == "text"],
    }


async def tour(client, arg):
    """Lists the tools, then makes each call a model makes: a good one, a failing one, one the
    schema refuses, one to a tool that is not listed."""
    capabilities = client.server_capabilities.model_dump(by_alias=True, exclude_none=True, mode="json")
    say(protocol=client.protocol_version, server=client.server_info.name, capabilities=capabilities)
    say(tools=[described(t) for t in (await client.list_tools()).tools])
    for name, arguments in json.loads(arg):
        try:
            say(call=name, result=outcome(await client.call_tool(name, arguments)))
        except Exception as e:  # a protocol error: the test reads its code and message
            say(call=name, error=str(e), code=getattr(getattr(e, "error", None), "code", None))


async def cancel(client, arg):
    """Calls a long tool asking for progress, and gives up on it after the first report."""
    name, arguments = json.loads(arg)
    reports = []
    first = anyio.Event()

    async def progress(done, total, message):
        reports.append({"progress": done, "total": total, "message": message})
        first.set()

    async with anyio.create_task_group() as group:

        async def call():
            await client.call_tool(name, arguments, progress_callback=progress)
            say(finished=True)

        group.start_soon(call)
        with anyio.fail_after(30):
            await first.wait()
        group.cancel_scope.cancel()
    say(cancelled=True, progress=reports)
    # Let the cancellation reach the daemon before the session closes, so what the test sees
    # is the cancellation, not the disconnect.
    await anyio.sleep(0.2)


async def watch(client, arg):
    """Reports the tool names each time the daemon says the list changed, `arg` times: on a
    `subscriptions/listen` stream (2026-07-28), or on the session (2025-11-25)."""
    names = lambda tools: sorted(t.name for t in tools.tools)
    with anyio.fail_after(60):
        if client.protocol_version < "2026-07-28":
            for _ in range(int(arg)):
                LIST_CHANGED.append(anyio.Event())
                say(ready=names(await client.list_tools()))
                await LIST_CHANGED[-1].wait()
                say(changed=names(await client.list_tools()))
            return
        async with client.listen(tools_list_changed=True) as subscription:
            say(honored=subscription.honored.tools_list_changed)
            say(ready=names(await client.list_tools()))
            seen = 0
            async for _event in subscription:
                say(changed=names(await client.list_tools()))
                seen += 1
                if seen == int(arg):
                    return
                say(ready=names(await client.list_tools()))


async def probe(client, arg):
    """Only connects and lists: for callers the daemon must refuse."""
    say(tools=[t.name for t in (await client.list_tools()).tools])


# One event per wait of a session-based `watch`, set when the session hears `list_changed`.
LIST_CHANGED = []


async def on_message(message):
    if isinstance(message, types.ToolListChangedNotification) and LIST_CHANGED:
        LIST_CHANGED[-1].set()


async def main(transport, scenario, arg):
    client, http = connect(transport, message_handler=on_message)
    try:
        async with client:
            await SCENARIOS[scenario](client, arg)
    except Exception as e:
        say(refused=True, error=repr(e), statuses=STATUSES)
    finally:
        if http is not None:
            await http.aclose()


SCENARIOS = {"tour": tour, "cancel": cancel, "watch": watch, "probe": probe}

if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], sys.stdin.read())

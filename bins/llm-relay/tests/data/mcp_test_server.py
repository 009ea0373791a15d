"""A small MCP server (stdio) for llm-relay's tool tests, on the official `mcp` SDK.

Tools: `slow` (sleeps, and records whether it finished or was cancelled: MCP's
`notifications/cancelled` cancels its scope), `crash` (the process exits mid-call), `big`
(returns 1 MiB of text) and `echo`. Each event is appended as a line to the file named by
$MCP_TEST_RECORD (when set), so a test can await it.
"""

import os

import anyio
from mcp.server.mcpserver import MCPServer

server = MCPServer("tgvoice-test")


def record(line: str) -> None:
    path = os.environ.get("MCP_TEST_RECORD")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


@server.tool()
async def slow(seconds: float = 3.0) -> str:
    """Wait `seconds`, then say done."""
    record("slow started")
    try:
        await anyio.sleep(seconds)
    except BaseException:
        record("slow cancelled")
        raise
    record("slow finished")
    return f"waited {seconds} s"


@server.tool()
def crash() -> str:
    """Exit the server in the middle of the call."""
    record("crash called")
    os._exit(3)


@server.tool()
def big() -> str:
    """Return 1 MiB of text."""
    record("big called")
    return "0123456789abcdef" * 65536


@server.tool()
def echo(text: str) -> str:
    """Say `text` back."""
    record(f"echo {text}")
    return f"echo: {text}"


if __name__ == "__main__":
    record("started")
    server.run()

"""A KDF stand-in that becomes ready, then drops every call it does not need to be ready.

It answers ``version`` and an authenticated ``get_enabled_coins`` (so the supervisor marks it
running) and ``stop``; any other call gets its connection closed without an answer: the way a
KDF that dies or hangs mid-call looks to the daemon, which must then answer 502.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
from pathlib import Path


async def _handle(
    config: dict[str, object], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
        call = json.loads(await reader.readexactly(length))
        method = call.get("method")
        if method == "version":
            answer: object = {"result": "2.5.1-beta_silent", "datetime": "2025-07-28T00:00:00Z"}
        elif method == "get_enabled_coins" and call.get("userpass") == config["rpc_password"]:
            answer = {"result": []}
        elif method == "stop":
            answer = {"result": "success"}
        else:
            writer.close()
            return
        body = json.dumps(answer).encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        if method == "stop":
            writer.close()
            sys.exit(0)


async def _main(config: dict[str, object]) -> None:
    port = config["rpcport"]
    assert isinstance(port, int)
    server = await asyncio.start_server(functools.partial(_handle, config), "127.0.0.1", port)
    print(">>>>>>>>>> DEX stats silent KDF ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(_main(json.loads(Path(os.environ["MM_CONF_PATH"]).read_text())))

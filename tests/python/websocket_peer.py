#!/usr/bin/python3
"""A real WebSocket server and client for Ringway's end-to-end tests (tests/tests/http_websocket.rs),
written against Debian's python3-websockets 10.4 (its asyncio API; `websockets.sync` came in 11).

    websocket_peer.py server PORT_FILE
        Echoes every message (text as text, binary as binary) on any path but /refuse, which it
        refuses with 426 Upgrade Required before any handshake. Listens on a free loopback port and
        writes it into PORT_FILE once it listens. Prints one JSON line per finished connection:
        {"event": "closed", "path", "host", "code", "reason"}.

    websocket_peer.py client HOST:PORT URL
        Connects to HOST:PORT and opens URL (its host is the Host header). Prints one JSON line:
        {"event": "open"} or {"event": "refused", "status", "upgrade"}. Then reads commands from stdin,
        one per line, and answers each with one JSON line:
          echo PATH text|binary   sends PATH's content as one message and writes the echo to
                                  PATH.echo: {"event": "echoed", "type": "text"|"binary"}
          close                   the closing handshake with code 1000:
                                  {"event": "closed", "code", "reason"}, then exits

Compression is off so every byte of a message crosses the proxy as it is, and messages may be any
size. Every step has a time limit, so neither side outlives a failed test for long.
"""

import asyncio
import http
import json
import os
import sys

import websockets

STEP_LIMIT = 30.0
REFUSED_BODY = b"websocket refused by the backend\n"


def emit(**event):
    print(json.dumps(event), flush=True)


async def refuse(path, request_headers):
    if path.startswith("/refuse"):
        headers = [("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")]
        return http.HTTPStatus.UPGRADE_REQUIRED, headers, REFUSED_BODY
    return None


async def echo(websocket):
    async for message in websocket:
        await websocket.send(message)
    await websocket.wait_closed()
    emit(
        event="closed",
        path=websocket.path,
        host=websocket.request_headers.get("Host"),
        code=websocket.close_code,
        reason=websocket.close_reason,
    )


async def serve(port_file):
    async with websockets.serve(
        echo,
        "127.0.0.1",
        0,
        process_request=refuse,
        compression=None,
        max_size=None,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        with open(port_file + ".tmp", "w") as f:
            f.write(str(port))
        os.replace(port_file + ".tmp", port_file)
        await asyncio.Future()


async def command():
    line = await asyncio.wait_for(
        asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline), STEP_LIMIT
    )
    return line.split()


async def client(address, url):
    host, port = address.rsplit(":", 1)
    try:
        websocket = await asyncio.wait_for(
            websockets.connect(
                url,
                host=host,
                port=int(port),
                compression=None,
                max_size=None,
                open_timeout=STEP_LIMIT,
                close_timeout=STEP_LIMIT,
            ),
            STEP_LIMIT,
        )
    except websockets.exceptions.InvalidStatusCode as refused:
        emit(
            event="refused",
            status=refused.status_code,
            upgrade=refused.headers.get("Upgrade"),
        )
        return
    emit(event="open")
    while True:
        words = await command()
        if words[:1] == ["echo"] and len(words) == 3:
            path, kind = words[1], words[2]
            with open(path, "rb") as f:
                content = f.read()
            await websocket.send(content.decode() if kind == "text" else content)
            answer = await asyncio.wait_for(websocket.recv(), STEP_LIMIT)
            with open(path + ".echo", "wb") as f:
                f.write(answer.encode() if isinstance(answer, str) else answer)
            emit(event="echoed", type="text" if isinstance(answer, str) else "binary")
        elif words == ["close"]:
            await asyncio.wait_for(websocket.close(code=1000, reason="done"), STEP_LIMIT)
            emit(event="closed", code=websocket.close_code, reason=websocket.close_reason)
            return
        else:
            raise ValueError(f"unknown command {words!r}")


def main():
    mode = sys.argv[1]
    try:
        if mode == "server":
            asyncio.run(serve(sys.argv[2]))
        else:
            asyncio.run(client(sys.argv[2], sys.argv[3]))
    except Exception as error:  # noqa: BLE001 - any failure ends the peer with its reason
        emit(event="error", error=f"{type(error).__name__}: {error}")
        # A blocked stdin reader thread would keep a normal exit waiting.
        sys.stdout.flush()
        os._exit(1)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()

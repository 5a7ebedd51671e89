"""Runs a ComfyUI behind a small reverse proxy that stops it once no master has controlled it for a
while: the self-stop of an elastic pool's member whose master is gone for good (docs/elastic-workers.md).

    python member_watchdog.py --listen 0.0.0.0 --port 8188 --upstream http://127.0.0.1:8189 \\
        --require-control-within 600 [--on-expiry '["sudo", "shutdown", "-h", "now"]'] \\
        -- python /opt/ComfyUI/main.py --listen 127.0.0.1 --port 8189

The master reaches the member through the proxy's port only. Every request the master sends counts
as control: its health checks alone come every few seconds, busy or idle. When no request came for
`--require-control-within` seconds (counted from the watchdog's own start, so choose more than
ComfyUI's start-up plus the pool's readiness deadline), ComfyUI is ended (terminate, wait, kill),
the `--on-expiry` command runs (a JSON argument list, never a shell line: a cloud pod's "remove
me", a shutdown), and the watchdog exits with code 3. When ComfyUI exits by itself, the watchdog
exits with its code.

Only the standard library and aiohttp (which ComfyUI itself needs) are used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import aiohttp
from aiohttp import web

EXIT_NOT_CONTROLLED = 3
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
              "transfer-encoding", "upgrade", "host"}
CHUNK = 256 * 1024


def log(message: str) -> None:
    sys.stderr.write(f"[member-watchdog] {message}\n")
    sys.stderr.flush()


def forwarded(headers: object) -> dict[str, str]:
    return {name: value for name, value in headers.items() if name.lower() not in HOP_BY_HOP}  # type: ignore[attr-defined]


class Watchdog:
    """The proxy, the clock of the last control, and the ComfyUI process behind them."""

    def __init__(self, upstream: str, limit: float) -> None:
        self.upstream = upstream.rstrip("/")
        self.limit = limit
        self.controlled_at = time.monotonic()
        self.session: aiohttp.ClientSession | None = None

    def touch(self) -> None:
        self.controlled_at = time.monotonic()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.touch()
        assert self.session is not None
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self.bridge_websocket(request)
        try:
            async with self.session.request(
                request.method, self.upstream + request.path_qs, headers=forwarded(request.headers),
                data=request.content if request.body_exists else None, allow_redirects=False,
            ) as answer:
                response = web.StreamResponse(status=answer.status, reason=answer.reason, headers=forwarded(answer.headers))
                await response.prepare(request)
                async for chunk in answer.content.iter_chunked(CHUNK):
                    await response.write(chunk)
                await response.write_eof()
                return response
        except aiohttp.ClientError as error:
            return web.Response(status=502, text=f"ComfyUI behind the watchdog does not answer: {error}")

    async def bridge_websocket(self, request: web.Request) -> web.StreamResponse:
        assert self.session is not None
        client = web.WebSocketResponse(max_msg_size=0)
        await client.prepare(request)
        url = "ws" + self.upstream.removeprefix("http") + request.path_qs
        headers = {name: value for name, value in forwarded(request.headers).items() if not name.lower().startswith("sec-websocket")}
        try:
            async with self.session.ws_connect(url, headers=headers, max_msg_size=0) as upstream:
                async def downstream() -> None:
                    async for message in upstream:
                        await self.relay(message, client)
                    await client.close()

                relay_down = asyncio.ensure_future(downstream())
                async for message in client:
                    self.touch()
                    await self.relay(message, upstream)
                relay_down.cancel()
                await asyncio.gather(relay_down, return_exceptions=True)
        except aiohttp.ClientError as error:
            log(f"websocket to ComfyUI failed: {error}")
        await client.close()
        return client

    @staticmethod
    async def relay(message: aiohttp.WSMessage, target: web.WebSocketResponse | aiohttp.ClientWebSocketResponse) -> None:
        if message.type == aiohttp.WSMsgType.TEXT:
            await target.send_str(message.data)
        elif message.type == aiohttp.WSMsgType.BINARY:
            await target.send_bytes(message.data)


async def end(process: asyncio.subprocess.Process, timeout: float = 20.0) -> None:
    """terminate -> wait -> kill, for ComfyUI and what it started (its own process group)."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        if os.name == "posix":
            os.killpg(process.pid, signal.SIGTERM)
        else:
            process.terminate()
    try:
        await asyncio.wait_for(process.wait(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            if os.name == "posix":
                os.killpg(process.pid, signal.SIGKILL)
            else:
                process.kill()
        await process.wait()


async def run(args: argparse.Namespace, comfy: list[str]) -> int:
    options = {"start_new_session": True} if os.name == "posix" else {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    process = await asyncio.create_subprocess_exec(*comfy, **options)
    log(f"ComfyUI started (pid {process.pid}); it stops unless controlled within {args.require_control_within:g}s")
    watchdog = Watchdog(args.upstream, args.require_control_within)
    watchdog.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10), auto_decompress=False)
    app = web.Application(client_max_size=1024**4)
    app.router.add_route("*", "/{tail:.*}", watchdog.handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, args.listen, args.port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT) if os.name == "posix" else ():
        loop.add_signal_handler(signum, stop.set)
    exited = asyncio.ensure_future(process.wait())
    stopped = asyncio.ensure_future(stop.wait())
    code = 0
    try:
        while True:
            done, _ = await asyncio.wait({exited, stopped}, timeout=1.0)
            if exited in done:
                code = process.returncode or 0
                log(f"ComfyUI exited with code {code}")
                break
            if stopped in done:
                log("asked to stop: ending ComfyUI")
                break
            silent = time.monotonic() - watchdog.controlled_at
            if silent > watchdog.limit:
                log(f"no control for {silent:.0f}s (limit {watchdog.limit:g}s): the master is gone, stopping this member")
                code = EXIT_NOT_CONTROLLED
                break
    finally:
        await end(process)
        stopped.cancel()
        await runner.cleanup()
        await watchdog.session.close()
    if code == EXIT_NOT_CONTROLLED and args.on_expiry:
        log(f"running {args.on_expiry}")
        expiry = await asyncio.create_subprocess_exec(*args.on_expiry)
        await expiry.wait()
    return code


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    if "--" not in argv:
        raise SystemExit("usage: member_watchdog.py [options] -- COMFYUI COMMAND...")
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="member_watchdog.py")
    parser.add_argument("--listen", default="127.0.0.1", help="address the proxy listens on")
    parser.add_argument("--port", type=int, required=True, help="port the master reaches the member on")
    parser.add_argument("--upstream", required=True, help="ComfyUI's own address, e.g. http://127.0.0.1:8189")
    parser.add_argument("--require-control-within", type=float, required=True, help="seconds without a request before stopping")
    parser.add_argument("--on-expiry", type=json.loads, default=None,
                        help='JSON argument list run after ComfyUI ended, e.g. ["shutdown", "now"]')
    args = parser.parse_args(argv[:split])
    comfy = argv[split + 1:]
    if not comfy:
        raise SystemExit("member_watchdog.py: no ComfyUI command after --")
    if args.on_expiry is not None and (not isinstance(args.on_expiry, list) or not all(isinstance(a, str) for a in args.on_expiry)):
        raise SystemExit("member_watchdog.py: --on-expiry must be a JSON list of strings")
    return args, comfy


if __name__ == "__main__":
    sys.exit(asyncio.run(run(*parse(sys.argv[1:]))))

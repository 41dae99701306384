#!/usr/bin/env python3
"""A Docker-API pass-through on a unix socket that runs SAM's Lambda containers on loopback.

`sam local` starts each function in a container, publishes the container's port 8080 (where
the runtime interface emulator takes invocations) on a host port it picked, and talks to it
there. Behind podman those containers would sit on a bridge network with private addresses,
and the functions could not reach an emulator listening on the host's 127.0.0.1. SAM has no
option for host networking, so this pass-through changes each Lambda container as it is
created (`POST .../containers/create`, the only request it alters):

- `HostConfig.NetworkMode = "host"` and no port bindings: every packet stays on loopback;
- the emulator listens on `127.0.0.1:<the host port SAM picked>`, where SAM expects it;
- the Lambda Runtime API inside listens on a free loopback port of its own instead of the
  fixed 9001, so several containers (start-api's warm ones, an invoke beside them) can run
  at once on the host's network;
- variables given at start-up are set in the container. SAM's `--env-vars` only overrides
  variables the template declares, and the emulator's endpoint belongs to this local run,
  not to the template.

Every other byte passes through unchanged, in both directions, including the raw streams of
hijacked connections (attach). Usable on its own:

  docker_passthrough.py --listen /tmp/x/docker.sock --upstream /tmp/x/podman.sock \
      --env AWS_ENDPOINT_URL=http://127.0.0.1:5000
"""

import argparse
import asyncio
import contextlib
import json
import os
import re
import socket
import threading

# SAM publishes the runtime interface emulator's port under this key.
RIE_PORT_KEY = "8080/tcp"
CREATE_PATH = re.compile(r"^(/v[0-9.]+)?/containers/create(\?|$)")
HEADER_END = b"\r\n\r\n"
# Docker API request heads are small; a generous limit still bounds a malformed one.
HEAD_LIMIT = 1 << 20


def free_loopback_port():
    """A TCP port on 127.0.0.1 that nothing listens on now (the kernel picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rewrite_create(body, env, pick_port=free_loopback_port):
    """The create request body with the changes above, or `body` itself for containers that
    are not SAM's Lambda containers (no published emulator port)."""
    spec = json.loads(body)
    host_config = spec.get("HostConfig") or {}
    bindings = (host_config.get("PortBindings") or {}).get(RIE_PORT_KEY) or []
    entrypoint = spec.get("Entrypoint")
    if not bindings or not bindings[0].get("HostPort") or not entrypoint:
        return body
    if isinstance(entrypoint, str):
        entrypoint = [entrypoint]
    rie_port = bindings[0]["HostPort"]
    host_config["NetworkMode"] = "host"
    host_config["PortBindings"] = {}
    spec["HostConfig"] = host_config
    spec.pop("ExposedPorts", None)
    spec["Entrypoint"] = [
        *entrypoint,
        "--runtime-interface-emulator-address",
        f"127.0.0.1:{rie_port}",
        "--runtime-api-address",
        f"127.0.0.1:{pick_port()}",
    ]
    kept = [item for item in spec.get("Env") or [] if item.split("=", 1)[0] not in env]
    spec["Env"] = kept + [f"{name}={value}" for name, value in env.items()]
    return json.dumps(spec).encode()


def parse_head(head):
    """(method, target, [(name, value)]) of an HTTP request head ending in a blank line."""
    lines = head[: -len(HEADER_END)].decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return method, target, headers


def header(headers, name):
    return next((value for key, value in headers if key.lower() == name), None)


def with_content_length(head, length):
    """`head` with its Content-Length replaced by `length`; every other line as it was."""
    lines = head[: -len(HEADER_END)].split(b"\r\n")
    kept = [line for line in lines[1:] if not line.lower().startswith(b"content-length:")]
    return b"\r\n".join([lines[0], *kept, b"Content-Length: %d" % length]) + HEADER_END


async def copy_chunked(reader, writer):
    """Forward one chunked body as it is, up to and including its last chunk and trailers."""
    while True:
        size_line = await reader.readuntil(b"\r\n")
        writer.write(size_line)
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while True:  # trailers, then the blank line that ends the body
                line = await reader.readuntil(b"\r\n")
                writer.write(line)
                if line == b"\r\n":
                    return
        writer.write(await reader.readexactly(size + 2))  # the data and its CRLF
        await writer.drain()


async def copy_raw(reader, writer):
    while data := await reader.read(1 << 16):
        writer.write(data)
        await writer.drain()


async def forward_requests(reader, writer, env):
    """Client to podman: request by request (keep-alive), rewriting container creation;
    after a request that upgrades the connection, the raw stream as it comes."""
    while True:
        try:
            head = await reader.readuntil(HEADER_END)
        except asyncio.IncompleteReadError:
            return  # the client closed the connection between requests
        method, target, headers = parse_head(head)
        if "chunked" in (header(headers, "transfer-encoding") or "").lower():
            writer.write(head)
            await copy_chunked(reader, writer)
        else:
            body = await reader.readexactly(int(header(headers, "content-length") or 0))
            if method == "POST" and CREATE_PATH.match(target) and body:
                rewritten = rewrite_create(body, env)
                if rewritten is not body:
                    head, body = with_content_length(head, len(rewritten)), rewritten
            writer.write(head + body)
        await writer.drain()
        if header(headers, "upgrade") is not None:
            await copy_raw(reader, writer)
            return


async def serve_connection(client_reader, client_writer, upstream_path, env):
    try:
        upstream_reader, upstream_writer = await asyncio.open_unix_connection(upstream_path, limit=HEAD_LIMIT)
    except OSError:
        client_writer.close()
        return

    async def client_to_upstream():
        try:
            await forward_requests(client_reader, upstream_writer, env)
            if upstream_writer.can_write_eof():
                upstream_writer.write_eof()  # the client is done sending; answers may follow
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            upstream_writer.close()  # a broken or malformed request: nothing sensible to forward

    async def upstream_to_client():
        try:
            await copy_raw(upstream_reader, client_writer)
        except ConnectionError:
            pass
        finally:
            client_writer.close()

    try:
        await asyncio.gather(client_to_upstream(), upstream_to_client())
    finally:
        for writer in (upstream_writer, client_writer):
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()


class PassThrough:
    """The pass-through on its own event loop in a background thread of this process."""

    def __init__(self, listen_path, upstream_path, env):
        self.listen_path = listen_path
        self.upstream_path = upstream_path
        self.env = dict(env)
        self._loop = asyncio.new_event_loop()
        self._server = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="docker-passthrough", daemon=True)

    def start(self):
        async def open_server():
            return await asyncio.start_unix_server(
                lambda r, w: serve_connection(r, w, self.upstream_path, self.env),
                path=self.listen_path,
                limit=HEAD_LIMIT,
            )

        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(open_server(), self._loop).result(timeout=10)
        return self

    def stop(self):
        """Closes the socket and every connection still open, then ends the thread."""

        async def close_all():
            self._server.close()
            connections = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in connections:
                task.cancel()
            await asyncio.gather(*connections, return_exceptions=True)
            await self._server.wait_closed()

        if self._thread.is_alive():
            if self._server is not None:
                asyncio.run_coroutine_threadsafe(close_all(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        if not self._loop.is_running():
            self._loop.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.listen_path)


async def serve_forever(listen_path, upstream_path, env):
    server = await asyncio.start_unix_server(
        lambda r, w: serve_connection(r, w, upstream_path, env), path=listen_path, limit=HEAD_LIMIT
    )
    async with server:
        await server.serve_forever()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="unix socket path to serve (DOCKER_HOST=unix://PATH)")
    parser.add_argument("--upstream", required=True, help="unix socket path of the Docker-API engine")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="set in every Lambda container"
    )
    args = parser.parse_args()
    env = {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--env {item!r} is not NAME=VALUE")
        env[name] = value
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_forever(args.listen, args.upstream, env))


if __name__ == "__main__":
    main()

"""The location store's Redis client (`registrar.location.resp`): URLs, pipelining, error replies,
cancelled callers, and the failures that must become a `ConnectionError` rather than a hang or a
desynchronised reply stream (checked against fake servers that misbehave on purpose)."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import hiredis
import pytest

from registrar.location.resp import Endpoint, RedisReplyError, RespClient
from sipcore.waiting import within

REDIS_URL = "redis://127.0.0.1:6379/0"


def test_urls() -> None:
    assert Endpoint.from_url("redis://127.0.0.1:6379/0") == Endpoint()
    assert Endpoint.from_url("redis://:s%40cret@redis.example:6380/2") == Endpoint(
        host="redis.example", port=6380, db=2, password="s@cret"
    )
    assert Endpoint.from_url("rediss://user:pw@r.example") == Endpoint(
        host="r.example", username="user", password="pw", tls=True
    )
    assert Endpoint.from_url("unix:///run/redis.sock?db=3&password=pw") == Endpoint(
        path="/run/redis.sock", db=3, password="pw"
    )
    with pytest.raises(ValueError, match="scheme"):
        Endpoint.from_url("http://127.0.0.1:6379")


@pytest.fixture
async def client() -> AsyncIterator[RespClient]:
    c = RespClient.from_url(REDIS_URL)
    try:
        await within(c.call("PING"), 2)
    except (OSError, TimeoutError) as exc:
        await c.close()
        pytest.skip(f"Redis unreachable at {REDIS_URL}: {exc!r}")
    yield c
    await c.close()


async def test_concurrent_callers_each_get_their_own_reply(client: RespClient) -> None:
    replies = await asyncio.gather(*(client.call("ECHO", f"m{i}") for i in range(500)))
    assert replies == [f"m{i}".encode() for i in range(500)]


async def test_an_error_reply_raises_and_the_connection_goes_on(client: RespClient) -> None:
    key = f"test:resp:{uuid.uuid4().hex}"
    try:
        await client.call("SET", key, "text")
        with pytest.raises(RedisReplyError, match="WRONGTYPE"):
            await client.call("HGETALL", key)
        assert await client.call("GET", key) == b"text"
    finally:
        await client.call("DEL", key)


async def test_a_cancelled_caller_does_not_shift_the_replies(client: RespClient) -> None:
    first = client.call("ECHO", "first")
    first.cancel()  # its reply still arrives, and must not be handed to the next caller
    assert await client.call("ECHO", "second") == b"second"
    assert first.cancelled()


async def test_the_url_database_is_selected(client: RespClient) -> None:
    key = f"test:resp:{uuid.uuid4().hex}"
    other = RespClient.from_url("redis://127.0.0.1:6379/3")
    try:
        await other.call("SET", key, "in-db-3")
        assert await client.call("EXISTS", key) == 0
        assert await other.call("GET", key) == b"in-db-3"
    finally:
        await other.call("DEL", key)
        await other.close()


async def test_nothing_listening_is_a_connection_error() -> None:
    with socket.socket() as s:  # a port that was free a moment ago and has no listener
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = RespClient.from_url(f"redis://127.0.0.1:{port}")
    with pytest.raises(ConnectionError):
        await c.call("PING")
    await c.close()


# -- fake servers ---------------------------------------------------------------------------------------

Handler = Callable[[list, asyncio.StreamWriter], Awaitable[None]]


async def _fake_server(handler: Handler) -> tuple[asyncio.Server, int, list[list]]:
    """Feeds every command it receives (as a list of bytes) to ``handler``, which answers or not."""
    received: list[list] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = hiredis.Reader()
        try:
            while data := await reader.read(65536):
                parser.feed(data)
                while (command := parser.gets()) is not False:
                    received.append(command)
                    await handler(command, writer)
        except ConnectionError:  # the client aborted the connection: that is what some tests expect
            pass
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], received


async def test_auth_and_select_from_the_url_are_sent_first() -> None:
    async def ok(command: list, writer: asyncio.StreamWriter) -> None:
        writer.write(b"+OK\r\n" if command[0] != b"PING" else b"+PONG\r\n")

    server, port, received = await _fake_server(ok)
    c = RespClient.from_url(f"redis://alice:pw@127.0.0.1:{port}/2")
    try:
        assert await c.call("PING") == b"PONG"
        assert received == [[b"AUTH", b"alice", b"pw"], [b"SELECT", b"2"], [b"PING"]]
    finally:
        await c.close()
        server.close()


async def test_a_server_that_never_answers_fails_the_request() -> None:
    async def silent(command: list, writer: asyncio.StreamWriter) -> None:
        pass

    server, port, _ = await _fake_server(silent)
    c = RespClient.from_url(f"redis://127.0.0.1:{port}", timeout=0.2)
    try:
        with pytest.raises(ConnectionError, match="did not answer"):
            await within(c.call("PING"), 30)  # the outer bound only keeps a bug from hanging
    finally:
        await c.close()
        server.close()


async def test_garbage_from_the_server_fails_the_request_and_the_next_one_reconnects() -> None:
    answers = [b"?not resp\r\n", b"+PONG\r\n"]

    async def garbage_then_ok(command: list, writer: asyncio.StreamWriter) -> None:
        writer.write(answers.pop(0))

    server, port, received = await _fake_server(garbage_then_ok)
    c = RespClient.from_url(f"redis://127.0.0.1:{port}")
    try:
        with pytest.raises(ConnectionError, match="protocol"):
            await c.call("PING")
        assert await c.call("PING") == b"PONG"
        assert len(received) == 2
    finally:
        await c.close()
        server.close()

"""The admin API's questions between the workers of one server, over the worker channel.

With ``server.workers > 1`` worker 0 answers the admin port (as it serves /metrics) and asks the
others for what only they hold: the calls whose Call-ID they own, a hang-up of one of them, a payment
or charge to apply to their in-memory balances, a reload. A question is one ADMIN_ASK frame (JSON:
id, asking worker, operation, arguments); the answer comes back as ADMIN_ANSWER frames (a header
``!IHH`` = question id, part, parts, then a slice of the JSON answer), so an answer larger than one
frame (thousands of calls) is cut in parts and put together again. Every question is bounded by a
timeout: a worker that does not answer is reported as such, never waited on forever.

Sans clock apart from the asyncio timeout; the frames go out through the ``send`` the worker gives.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from server.worker_channel import ADMIN_ANSWER, ADMIN_ASK
from sipcore.waiting import within

log = structlog.get_logger("sipcore.admin")

AdminHandler = Callable[[str, dict[str, Any]], Awaitable[Any]]
"""(operation, arguments) -> a JSON-able answer; raises `AdminRefused` for an answer that says no."""

_PART = struct.Struct("!IHH")
PART_SIZE = 96 * 1024  # of the JSON answer per frame (MAX_FRAME is 128 KiB)
TIMEOUT = 3.0


class PeerUnavailable(Exception):
    """A worker did not answer (channel full, timeout) or failed answering."""


class AdminRefused(Exception):
    """An answer that says no (unknown customer, bad amount…), carried back to the asker."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class AdminPeers:
    def __init__(
        self,
        index: int,
        count: int,
        send: Callable[[int, int, bytes], bool],
        handler: AdminHandler,
        timeout: float = TIMEOUT,
    ) -> None:
        self.index = index
        self.count = count
        self._send = send
        self._handler = handler
        self.timeout = timeout
        self._seq = 0
        self._waiting: dict[int, tuple[asyncio.Future[Any], dict[int, bytes]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- asking --
    async def ask(
        self, dest: int, op: str, args: dict[str, Any] | None = None, timeout: float | None = None
    ) -> Any:
        """Worker ``dest``'s answer to ``op``; raises PeerUnavailable or AdminRefused."""
        timeout = self.timeout if timeout is None else timeout
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        qid = self._seq
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[qid] = (future, {})
        question = json.dumps({"id": qid, "from": self.index, "op": op, "args": args or {}}).encode()
        try:
            if not self._send(dest, ADMIN_ASK, question):
                raise PeerUnavailable(f"worker {dest}: channel full")
            return await within(future, timeout)
        except TimeoutError:
            raise PeerUnavailable(f"worker {dest}: no answer within {timeout:g} s") from None
        finally:
            self._waiting.pop(qid, None)

    async def ask_others(
        self, op: str, args: dict[str, Any] | None = None, timeout: float | None = None
    ) -> dict[int, Any]:
        """Every other worker's answer (or the exception it ended with), by worker index."""
        others = [w for w in range(self.count) if w != self.index]
        answers = await asyncio.gather(
            *(self.ask(w, op, args, timeout) for w in others), return_exceptions=True
        )
        return dict(zip(others, answers, strict=True))

    # -- frames in --
    def receive(self, kind: int, payload: bytes) -> None:
        if kind == ADMIN_ASK:
            task = asyncio.get_running_loop().create_task(self._answer(payload))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif kind == ADMIN_ANSWER:
            self._part(payload)

    async def _answer(self, payload: bytes) -> None:
        try:
            question = json.loads(payload)
            qid, dest = int(question["id"]), int(question["from"])
        except (ValueError, KeyError, TypeError):
            log.warning("admin_question_unreadable", size=len(payload))
            return
        try:
            body: dict[str, Any] = {
                "ok": True,
                "result": await self._handler(question["op"], question["args"]),
            }
        except AdminRefused as exc:
            body = {"ok": False, "status": exc.status, "error": exc.message}
        except Exception as exc:
            log.exception("admin_question_failed", op=question.get("op"))
            body = {"ok": False, "status": 500, "error": repr(exc)}
        data = json.dumps(body).encode()
        parts = max(1, -(-len(data) // PART_SIZE))
        if parts > 0xFFFF:
            data = json.dumps({"ok": False, "status": 500, "error": "answer too large"}).encode()
            parts = 1
        for n in range(parts):
            chunk = data[n * PART_SIZE : (n + 1) * PART_SIZE]
            if not self._send(dest, ADMIN_ANSWER, _PART.pack(qid, n, parts) + chunk):
                log.warning("admin_answer_dropped", worker=dest, op=question.get("op"))
                return

    def _part(self, payload: bytes) -> None:
        if len(payload) < _PART.size:
            return
        qid, n, parts = _PART.unpack_from(payload)
        waiting = self._waiting.get(qid)
        if waiting is None:
            return  # timed out already
        future, got = waiting
        got[n] = payload[_PART.size :]
        if len(got) < parts or future.done():
            return
        try:
            body = json.loads(b"".join(got[i] for i in range(parts)))
        except (ValueError, KeyError):
            future.set_exception(PeerUnavailable("unreadable answer"))
            return
        if body.get("ok"):
            future.set_result(body.get("result"))
        elif int(body.get("status", 500)) < 500:
            future.set_exception(AdminRefused(int(body["status"]), str(body.get("error"))))
        else:
            future.set_exception(PeerUnavailable(str(body.get("error"))))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()

"""A private Redis Sentinel deployment for the failover tests: a redis-server master and one replica on
free ports, and 1-3 redis-sentinel processes watching them with a short down-after, all in a temp dir.
Every process is the test's own (killed by ``stop``); nothing touches the machine's Redis."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.conftest import free_port

MASTER_NAME = "sipcoremaster"


class SentinelSet:
    def __init__(self, directory: Path, sentinels: int = 1, down_after_ms: int = 500) -> None:
        server, sentinel = shutil.which("redis-server"), shutil.which("redis-sentinel")
        if server is None or sentinel is None:
            pytest.skip("redis-server / redis-sentinel are not installed")
        self.server_bin, self.sentinel_bin = server, sentinel
        self.directory = directory
        self.down_after_ms = down_after_ms
        self.redis_ports = [free_port(), free_port()]  # [initial master, replica]
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}  # port -> process

    @property
    def sentinel_addresses(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.sentinel_ports]

    def _redis(self, port: int, replica_of: int | None) -> None:
        data = self.directory / f"redis-{port}"
        data.mkdir(exist_ok=True)
        args = [self.server_bin, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(data), "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"]  # fmt: skip
        if replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(replica_of)]
        self.procs[port] = subprocess.Popen(args, stdout=subprocess.DEVNULL)

    def _sentinel(self, port: int) -> None:
        conf = self.directory / f"sentinel-{port}.conf"
        quorum = 1 if len(self.sentinel_ports) == 1 else 2
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {self.directory}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.redis_ports[0]} {quorum}\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}\n"
            f"sentinel failover-timeout {MASTER_NAME} 5000\nsentinel parallel-syncs {MASTER_NAME} 1\n"
        )
        self.procs[port] = subprocess.Popen([self.sentinel_bin, str(conf)], stdout=subprocess.DEVNULL)

    async def start(self) -> None:
        master, replica = self.redis_ports
        self._redis(master, None)
        self._redis(replica, master)
        await self._until(lambda: self._replicas_of(master), "the replica to sync")
        for port in self.sentinel_ports:
            self._sentinel(port)
        await self._until(self._sentinels_know_the_replica, "the sentinels to see the replica")

    async def master(self) -> tuple[str, int]:
        """The master the first answering sentinel names."""
        for port in self.sentinel_ports:
            try:
                client = aioredis.Redis(port=port, socket_timeout=1)
                try:
                    host, p = await client.sentinel_get_master_addr_by_name(MASTER_NAME)
                finally:
                    await client.aclose()
                return host, int(p)
            except Exception:
                continue
        raise AssertionError("no sentinel answered")

    async def failover(self) -> None:
        """SENTINEL FAILOVER: the replica promoted without agreement (the short test)."""
        client = aioredis.Redis(port=self.sentinel_ports[0], socket_timeout=2)
        deadline = time.monotonic() + 30
        try:
            while True:  # NOGOODSLAVE until the sentinel has a fresh INFO of the replica
                try:
                    await client.execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
                    return
                except aioredis.ResponseError as exc:
                    if "NOGOODSLAVE" not in str(exc) or time.monotonic() > deadline:
                        raise
                await asyncio.sleep(0.2)
        finally:
            await client.aclose()

    def kill(self, port: int) -> None:
        proc = self.procs.get(port)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    async def wait_master_is(self, port: int, timeout: float = 30.0) -> float:
        """Until the sentinels name ``port`` and it says it is a master; returns the monotonic time."""

        async def promoted() -> bool:
            if (await self.master())[1] != port:
                return False
            client = aioredis.Redis(port=port, socket_timeout=1)
            try:
                return (await client.execute_command("ROLE"))[0] in (b"master", "master")
            finally:
                await client.aclose()

        await self._until(promoted, f"127.0.0.1:{port} to be master", timeout)
        return time.monotonic()

    def stop(self) -> None:
        for port in list(self.procs):
            self.kill(port)

    # -- internals --

    async def _replicas_of(self, port: int) -> bool:
        client = aioredis.Redis(port=port, socket_timeout=1)
        try:
            info = await client.info("replication")
            return info.get("connected_slaves", 0) >= 1 and info.get("slave0", {}).get("state") == "online"
        finally:
            await client.aclose()

    async def _sentinels_know_the_replica(self) -> bool:
        for port in self.sentinel_ports:
            client = aioredis.Redis(port=port, socket_timeout=1)
            try:
                replicas = await client.sentinel_slaves(MASTER_NAME)
            finally:
                await client.aclose()
            if not any(
                r.get("port") == self.redis_ports[1] and "s_down" not in r.get("flags", "") for r in replicas
            ):
                return False
        return True

    @staticmethod
    async def _until(cond, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while True:
            try:
                if await cond():
                    return
            except Exception:
                pass  # not up yet
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.1)

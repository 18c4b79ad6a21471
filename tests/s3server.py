"""A real S3 API on 127.0.0.1 for tests: moto's server mode, behind a TCP proxy that can cut the line.

The proxy is how a test injects a failure at the storage level: with ``cut_on_upload`` set, the first
upload request (``PUT``, or ``POST`` of a multipart upload) that passes through closes every
connection and refuses new ones until :meth:`S3Server.heal` — what a lost network or an S3 outage
does to a writer in the middle of a commit.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "AKIAMOTOTESTKEY7", "AWS_SECRET_ACCESS_KEY": "m0t0-s3cret-never-printed"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Proxy:
    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.cut = threading.Event()
        self.cut_on_upload = threading.Event()
        self.uploads_cut = 0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.cut.is_set():
                client.close()
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open |= {client, server}
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, upstream: bool) -> None:
        try:
            while not self.cut.is_set():
                data = source.recv(65536)
                if not data:
                    break
                if upstream and self.cut_on_upload.is_set() and data.startswith((b"PUT ", b"POST ")):
                    self.uploads_cut += 1
                    self.cut_line()
                    break
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with suppress(OSError):
                    sock.close()

    def cut_line(self) -> None:
        self.cut.set()
        with self._lock:
            for sock in self._open:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
            self._open.clear()

    def close(self) -> None:
        self.cut_line()
        self.listener.close()


class S3Server:
    """moto on 127.0.0.1 (started and stopped by PID), reached through a cuttable proxy."""

    def __init__(self, process: subprocess.Popen[bytes], proxy: _Proxy) -> None:
        self.process = process
        self.proxy = proxy
        self.endpoint = f"http://127.0.0.1:{proxy.port}"

    def env(self) -> dict[str, str]:
        """The standard AWS variables that point DuckDB (and boto3) at this server."""
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": "us-east-1"}

    def client(self):  # type: ignore[no-untyped-def]  # boto3's client type is generated
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{self.proxy.upstream}",  # around the proxy: the test's own view
            region_name="us-east-1",
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        found: list[str] = []
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            found += [str(o["Key"]) for o in page.get("Contents", [])]
        return found

    def cut_on_next_upload(self) -> None:
        self.proxy.cut_on_upload.set()

    def heal(self) -> None:
        self.proxy.cut_on_upload.clear()
        self.proxy.cut.clear()


@contextmanager
def s3_server(*buckets: str) -> Iterator[S3Server]:
    """Start moto's S3 server on a free loopback port with ``buckets``; stop it by its PID afterwards."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    proxy = _Proxy(port)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).close()
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto's S3 server did not start") from None
                time.sleep(0.2)
        server = S3Server(process, proxy)
        for bucket in buckets:
            server.client().create_bucket(Bucket=bucket)
        yield server
    finally:
        proxy.close()
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

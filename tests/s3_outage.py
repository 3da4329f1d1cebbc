"""A private S3 (moto in server mode) that a test can take down and bring back.

Not the session-wide server of conftest.py: other tests keep theirs while this one is
stopped. moto keeps its buckets in this process, so a server started again on the same
port serves what was there: a transient outage, not a wiped store.

Clients reach it through a plug on a fixed free port that forwards to moto's own port.
Stopping moto alone would leave the clients' kept-alive connections served by werkzeug's
handler threads; a server that dies drops them, so stopping pulls the plug too: the
listening socket and every live connection close, and new ones are refused.
"""
from __future__ import annotations

import socket
import threading
import time
import uuid

import pytest

from tests.conftest import free_port


class _Plug:
    """A TCP forwarder 127.0.0.1:port -> 127.0.0.1:target that can be pulled out and put back."""

    def __init__(self, port: int, target: int):
        self.port, self.target = port, target
        self.listener = None
        self.live: set[socket.socket] = set()
        self.lock = threading.Lock()

    def open(self) -> None:
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(64)
        self.listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def _accept(self, ls: socket.socket) -> None:
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.live |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(1 << 16):
                b.sendall(data)
        except OSError:
            pass
        finally:
            self._drop(a, b)

    def _drop(self, *socks: socket.socket) -> None:
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
            with self.lock:
                self.live.discard(s)

    def pull(self) -> None:
        if self.listener is not None:
            self._drop(self.listener)
            self.listener = None
        with self.lock:
            live = list(self.live)
        self._drop(*live)


class PrivateS3:
    def __init__(self):
        self.port = free_port()          # what clients use
        self._moto_port = free_port()    # where moto listens, stopped and started again
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = None
        self._plug = _Plug(self.port, self._moto_port)
        self.start()

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=self._moto_port, verbose=False)
        server.start()
        self._server = server
        self._plug.open()

    def stop(self) -> None:
        self._plug.pull()
        if self._server is not None:
            self._server.stop()
            self._server = None

    def back_after(self, seconds: float) -> threading.Thread:
        """Start the server again ``seconds`` from now (the length of the outage)."""
        def later():
            time.sleep(seconds)
            self.start()

        thread = threading.Thread(target=later, daemon=True)
        thread.start()
        return thread


@pytest.fixture
def private_s3(monkeypatch):
    """``(server, client, bucket)``, with the environment pointed at the private server."""
    import boto3

    from mlcore import storage

    server = PrivateS3()
    for k, v in {"S3_ENDPOINT_URL": server.url, "AWS_ACCESS_KEY_ID": "testing",
                 "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                 "MLCORE_S3_RETRY_S": "30"}.items():
        monkeypatch.setenv(k, v)
    storage._local.__dict__.clear()
    client = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1")
    bucket = f"outage-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    yield server, client, bucket
    storage._local.__dict__.clear()
    server.stop()

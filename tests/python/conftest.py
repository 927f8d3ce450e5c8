"""Shared fixtures for the Python checks: the real `ferrum-serve` binary on a free loopback port.

The binary is the one `scripts/test.sh` builds and exports as FERRUM_SERVE_BIN; ONNX Runtime's
library comes from ORT_DYLIB_PATH (default: the repository's .ort/). A server is started with
`--host 127.0.0.1 --port 0`; its JSON log line whose message is "listening" gives the address,
and it is used once /health/ready answers 200.

    def test_something(server):                     # the default server, shared per session
        status, body = server.post("/predict", {...})

    def test_other(start_server):                   # a server with its own flags
        s = start_server("--models-dir", str(d), "--manifest", str(d / "manifest.json"))
"""

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def server_binary():
    path = os.environ.get("FERRUM_SERVE_BIN") or str(REPO / "target" / "debug" / "ferrum-serve")
    if not Path(path).is_file():
        pytest.fail(f"server binary {path} not found: run scripts/test.sh, or cargo build and "
                    "set FERRUM_SERVE_BIN")
    return path


class Server:
    """A running server process: HTTP helpers and its log lines."""

    def __init__(self, args, startup_timeout=60.0):
        env = dict(os.environ)
        env["LOG_FORMAT"] = "json"
        # gRPC off unless asked for (--grpc-port): its default port would be shared by servers.
        env.setdefault("GRPC_PORT", "0")
        env.setdefault("ORT_DYLIB_PATH", str(REPO / ".ort" / "libonnxruntime.so"))
        self.logs = []
        self._address = None
        self._listening = threading.Event()
        self.process = subprocess.Popen(
            [server_binary(), "--host", "127.0.0.1", "--port", "0", *args],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        self._reader = threading.Thread(target=self._read_logs, daemon=True)
        self._reader.start()
        if not self._listening.wait(30):
            self.stop()
            raise RuntimeError("server did not listen; logs:\n" + self.log_text())
        self.base = f"http://{self._address}"
        deadline = time.monotonic() + startup_timeout
        while True:
            status, _ = self.get("/health/ready")
            if status == 200:
                break
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("server not ready; logs:\n" + self.log_text())
            time.sleep(0.02)

    def _read_logs(self):
        for line in self.process.stdout:
            self.logs.append(line.rstrip("\n"))
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("message") == "listening":
                self._address = event["address"]
                self._listening.set()
        self._listening.set()

    def log_text(self):
        return "\n".join(self.logs)

    def url(self, path):
        return self.base + path

    def request(self, method, path, body=None, timeout=300):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url(path), data=data, method=method,
                                     headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        except (urllib.error.URLError, ConnectionError):
            return None, None
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw

    def post(self, path, body, timeout=300):
        return self.request("POST", path, body, timeout)

    def get(self, path):
        return self.request("GET", path)

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="session")
def start_server():
    """Starts servers with extra flags; all are stopped at the end of the session."""
    started = []

    def start(*args):
        server = Server(list(args))
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def server(start_server):
    """The server with its default configuration, serving the committed models."""
    return start_server()

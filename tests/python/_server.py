"""Starts the real ferrum-serve binary for Python tests and stops it afterwards.

The binary comes from FERRUM_SERVE_BIN (scripts/test.sh exports it), ONNX Runtime from
ORT_DYLIB_PATH. The server binds 127.0.0.1 on a free port; its address is read from the JSON log
line whose message is "listening", and it is used once /health/ready answers 200.
"""

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class Server:
    def __init__(self, *args, timeout=60.0, models_dir=None, manifest=None):
        binary = os.environ.get("FERRUM_SERVE_BIN", str(REPO / "target/debug/ferrum-serve"))
        # gRPC off unless asked for (--grpc-port): its default port would be shared by servers.
        env = dict(os.environ, LOG_FORMAT="json")
        env.setdefault("GRPC_PORT", "0")
        env.setdefault("ORT_DYLIB_PATH", str(REPO / ".ort/libonnxruntime.so"))
        self.logs = []
        self.proc = subprocess.Popen(
            [binary, "--host", "127.0.0.1", "--port", "0",
             "--models-dir", str(models_dir or REPO / "models"),
             "--manifest", str(manifest or REPO / "manifest.json"),
             *args],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        found = threading.Event()
        self.address = None

        def read():
            for line in self.proc.stdout:
                self.logs.append(line.rstrip("\n"))
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("message") == "listening" and not found.is_set():
                    self.address = event["address"]
                    found.set()
            found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(timeout) or self.address is None:
            self.stop()
            raise RuntimeError("ferrum-serve did not listen:\n" + "\n".join(self.logs))
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://{self.address}/health/ready", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("ferrum-serve not ready:\n" + "\n".join(self.logs))
            time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

"""A rollout under load (issue #14's must-show): wrk sends single-row /predict requests at about
half of the measured peak while the server, in `poll` or `explicit` mode, gets a version 2, puts
it at a 10% canary, promotes it and retires version 1. Prints the non-2xx answers and socket
errors (both must be 0) and each phase's share of answers per version, from the answers'
x-ferrum-version (the canary must be within 3 points of its weight).

Usage: python bench/rollout.py [--binary target/release/ferrum-serve]
                               [--mode poll|explicit|both|shadow] [--duration 30] [--connections 64]
--mode shadow instead measures the primary's p99 (c=8, full rate) with a shadow version on and
off, interleaved, on one server.
Stdlib only; needs wrk. Runs over a temporary copy of models/ and manifest.json.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL = "breast-cancer"
CANARY = {"1": 90, "2": 10}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method="POST" if data else "GET")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read() or b"null")


def until(what, check, timeout=60):
    deadline = time.time() + timeout
    while not check():
        if time.time() > deadline:
            sys.exit(f"{what}: not within {timeout} s")
        time.sleep(0.05)


class Rollout:
    """One server over a copy of the repository, and the rollout's steps in one mode."""

    def __init__(self, binary, mode, work):
        self.mode, self.work = mode, work
        shutil.copytree(REPO / "models", work / "models")
        shutil.copy(REPO / "manifest.json", work / "manifest.json")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = open(work / "server.log", "w")
        self.server = subprocess.Popen(
            [binary, "--host", "127.0.0.1", "--port", str(self.port), "--grpc-port", "0",
             "--models-dir", str(work / "models"), "--manifest", str(work / "manifest.json"),
             "--model-control-mode", mode, "--repository-poll-secs", "1",
             "--ort-dylib-path", str(REPO / ".ort/libonnxruntime.so"), "--log-format", "json"],
            stdout=self.log, stderr=subprocess.STDOUT)
        until("ready", self.ready)

    def ready(self):
        try:
            return call(self.base, "/health/ready")["status"] == "ready"
        except OSError:
            return False

    def manifest(self):
        return json.loads((self.work / "manifest.json").read_text())

    def write_manifest(self, manifest):
        tmp = self.work / "manifest.json.tmp"
        tmp.write_text(json.dumps(manifest, indent=2))
        os.replace(tmp, self.work / "manifest.json")

    def state(self, version):
        for entry in call(self.base, "/v2/repository/index", {}):
            if entry["name"] == MODEL and entry["version"] == version:
                return entry["state"]
        return None

    def share(self, version):
        for model in call(self.base, "/health")["models"]:
            if model["name"] == MODEL and model["version"] == version:
                return model["share_percent"]
        return None

    def configure(self, rollout):
        """Applies a rollout block: in the manifest (poll) or as a load's config (explicit)."""
        if self.mode == "poll":
            manifest = self.manifest()
            manifest["rollout"] = {MODEL: rollout}
            self.write_manifest(manifest)
        else:
            call(self.base, f"/v2/repository/models/{MODEL}/load",
                 {"parameters": {"config": json.dumps(rollout)}})

    def add_version_2(self):
        shutil.copytree(self.work / "models" / MODEL / "1", self.work / "models" / MODEL / "2")
        manifest = self.manifest()
        entry = dict(next(m for m in manifest["models"]
                          if m["name"] == MODEL and m["version"] == "1"))
        entry.update(version="2", path=f"{MODEL}/2")
        manifest["models"].append(entry)
        if self.mode == "poll":
            # Until the split is set, version 1 keeps all traffic.
            manifest["rollout"] = {MODEL: {"split": {"1": 100}}}
            self.write_manifest(manifest)
        else:
            self.write_manifest(manifest)
            call(self.base, f"/v2/repository/models/{MODEL}/load",
                 {"parameters": {"config": json.dumps({"split": {"1": 100}})}})
        until("version 2 READY", lambda: self.state("2") == "READY")

    def retire_version_1(self):
        if self.mode == "poll":
            manifest = self.manifest()
            manifest["models"] = [m for m in manifest["models"]
                                  if not (m["name"] == MODEL and m["version"] == "1")]
            manifest["rollout"] = {MODEL: {"split": {"2": 1}}}
            self.write_manifest(manifest)
        else:
            self.configure({"version_policy": {"specific": {"versions": [2]}},
                            "split": {"2": 1}})
        until("version 1 unloaded", lambda: self.state("1") in (None, "UNAVAILABLE"))

    def stop(self):
        self.server.terminate()
        self.server.wait(30)
        self.log.close()


def wrk(base, body_file, connections, seconds, delay_ms):
    env = dict(os.environ, BODY_FILE=str(body_file), PREDICT_PATH=f"/models/{MODEL}/predict",
               DELAY_MS=str(delay_ms))
    return subprocess.Popen(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
         "-s", str(REPO / "bench/rollout.lua"), base],
        env=env, stdout=subprocess.PIPE, text=True)


def parse(output):
    counts, result = defaultdict(dict), {}
    for line in output.splitlines():
        fields = line.split()
        if fields[:1] == ["COUNT"]:
            counts[int(fields[1])][fields[2]] = int(fields[3])
        elif fields[:1] in (["NON2XX"], ["SOCKET_ERRORS"], ["P99_MS"]):
            result[fields[0]] = float(fields[1])
        elif fields[:1] == ["REQUESTS"]:
            result["REQUESTS"], result["MICROS"] = int(fields[1]), int(fields[2])
    return counts, result


def shares(counts, start, end):
    """Percent per version over the whole seconds strictly inside (start, end)."""
    total = defaultdict(int)
    for second, versions in counts.items():
        if start < second < end - 1:
            for version, n in versions.items():
                total[version] += n
    n = sum(total.values())
    return {v: round(100 * c / n, 2) for v, c in sorted(total.items())} if n else {}


def run(binary, mode, duration, connections):
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        body = work / "body.json"
        row = json.loads((REPO / f"models/{MODEL}/1/training_log.json").read_text())["rows"][0]
        body.write_text(json.dumps({"instances": [row["features"]]}))
        rollout = Rollout(binary, mode, work)
        try:
            _, peak = parse(wrk(rollout.base, body, connections, 5, 0).communicate()[0])
            peak_rps = peak["REQUESTS"] / (peak["MICROS"] / 1e6)
            # At peak each connection spends connections/peak s per request: waiting as long
            # again between requests halves the rate.
            delay_ms = max(1, round(1000 * connections / peak_rps))
            load = wrk(rollout.base, body, connections, duration, delay_ms)
            started = time.time()
            marks = {}

            def at(fraction):
                time.sleep(max(0.0, started + fraction * duration - time.time()))

            at(0.1)
            rollout.add_version_2()
            at(0.25)
            rollout.configure({"split": CANARY})
            until("canary at 10%", lambda: rollout.share("2") == 10.0)
            marks["canary"] = time.time()
            at(0.6)
            rollout.configure({"split": {"2": 100}})
            until("version 2 promoted", lambda: rollout.share("2") == 100.0)
            marks["promoted"] = time.time()
            at(0.8)
            rollout.retire_version_1()
            marks["retired"] = time.time()
            counts, result = parse(load.communicate()[0])
        finally:
            rollout.stop()
    rate = result["REQUESTS"] / (result["MICROS"] / 1e6)
    canary = shares(counts, marks["canary"], marks["promoted"])
    promoted = shares(counts, marks["promoted"], time.time())
    ok = (result["NON2XX"] == 0 and result["SOCKET_ERRORS"] == 0
          and abs(canary.get("2", 0) - 10) <= 3 and abs(canary.get("1", 0) - 90) <= 3
          and promoted == {"2": 100.0})
    print(f"{mode}: peak {peak_rps:.0f} req/s, under rollout {rate:.0f} req/s "
          f"({100 * rate / peak_rps:.0f}% of peak, {connections} connections, "
          f"{delay_ms} ms between requests), p99 {result['P99_MS']:.2f} ms")
    print(f"  non-2xx {result['NON2XX']:.0f}, socket errors {result['SOCKET_ERRORS']:.0f}")
    print(f"  canary window shares {canary} (weights {CANARY}); after promotion {promoted}")
    print(f"  {'PASS' if ok else 'FAIL'}")
    return ok


def shadow_cost(binary, duration, connections, rounds=3):
    """The primary's p99 with a shadow on and off (issue #14): one server in explicit mode with
    version 2 (a copy of version 1) loaded, the shadow switched on and off between interleaved
    wrk runs at full rate; medians of `rounds` runs each."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        body = work / "body.json"
        row = json.loads((REPO / f"models/{MODEL}/1/training_log.json").read_text())["rows"][0]
        body.write_text(json.dumps({"instances": [row["features"]]}))
        rollout = Rollout(binary, "explicit", work)
        try:
            rollout.add_version_2()
            p99 = {"off": [], "on": []}
            for _ in range(rounds):
                for shadow in ("off", "on"):
                    config = {"split": {"1": 1}}
                    if shadow == "on":
                        config["shadow"] = "2"
                    rollout.configure(config)
                    _, result = parse(wrk(rollout.base, body, connections, duration, 0)
                                      .communicate()[0])
                    if result["NON2XX"] or result["SOCKET_ERRORS"]:
                        sys.exit(f"shadow {shadow}: {result}")
                    p99[shadow].append(result["P99_MS"])
            metrics = urllib.request.urlopen(rollout.base + "/metrics", timeout=10).read().decode()
        finally:
            rollout.stop()
    median = {k: sorted(v)[len(v) // 2] for k, v in p99.items()}
    shadowed = [line for line in metrics.splitlines()
                if line.startswith("ferrum_shadow_") and "_bucket" not in line]
    print(f"shadow: primary p99 at c={connections}, median of {rounds} interleaved {duration} s "
          f"runs: off {median['off']:.2f} ms, on {median['on']:.2f} ms "
          f"(runs off {p99['off']}, on {p99['on']})")
    for line in shadowed:
        print(f"  {line}")
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", default=str(REPO / "target/release/ferrum-serve"))
    parser.add_argument("--mode", choices=["poll", "explicit", "both", "shadow"], default="both",
                        help="shadow: the primary's p99 with a shadow version on and off")
    parser.add_argument("--duration", type=int, default=30)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    if args.mode == "shadow":
        shadow_cost(args.binary, min(args.duration, 10), 8)
        return
    modes = ["poll", "explicit"] if args.mode == "both" else [args.mode]
    results = [run(args.binary, mode, args.duration, args.connections) for mode in modes]
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()

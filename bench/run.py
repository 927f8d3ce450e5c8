"""`make bench`: every server and load measured on this machine in one run, then one table.

Servers (one at a time, each on a free loopback port):
  ferrum-serve with --batching off and --batching on (release build), the FastAPI + uvicorn
  (2 workers, TCP_NODELAY fixed) + onnxruntime reference (bench/fastapi_server.py), and the HTTP
  floor (examples/http_floor.rs: axum parsing the same JSON, no model).
Loads (wrk -t1, after a warm-up run at the same concurrency):
  1. single-row /predict by feature name at c=1, 8, 64 (breast-cancer; diabetes for ferrum modes)
  2. 64-row /predict by feature name (rows/s), and 256-row V2 binary-tensor infer
  3. gRPC ModelInfer (256 rows and single row) and the same 256-row V2 binary body over h2c,
     both with h2load -t1 (nghttp2), so gRPC and REST are compared through one load generator
  4. with --typed-models (tests/typed_models/build.py's output): the CNN `[N, 1, 8, 8]` served as
     named tensors from a bare repository, 256-row V2 binary infer (zeros, as the floor's)
Compute floor: examples/compute_floor.rs, in-process ONNX Runtime at batch 1 and 256 (and the
CNN's, on the same zeros).

Every figure comes with the CPU the load generator and the server used (cores = CPU seconds per
wall second), because on 2 cores wrk's share is taken from the server.

Usage: python bench/run.py [--duration S] [--warmup S] [--out bench/results]
(bench/run.sh installs wrk, builds, and makes the venv first.)
"""

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"
WORK = REPO / "bench" / ".work"
TICKS = os.sysconf("SC_CLK_TCK")
NICE = []  # prefix for measured processes (set from --nice)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_pids(pid):
    pids = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                for child in f.read().split():
                    pids.extend(tree_pids(int(child)))
    except OSError:
        pass
    return pids


def cpu_seconds(pid):
    """User + system CPU seconds of a process and its descendants."""
    total = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / TICKS


# ---------------------------------------------------------------- bodies

def make_bodies():
    WORK.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((REPO / "manifest.json").read_text())
    entries = {m["name"]: m for m in manifest["models"]}
    bodies = {}
    for model in ("breast-cancer", "diabetes"):
        log = json.loads((REPO / "models" / model / "1" / "training_log.json").read_text())["rows"]
        one = {"instances": [log[0]["features"]]}
        many = {"instances": [log[i % len(log)]["features"] for i in range(64)]}
        for name, body in ((f"{model}-1", one), (f"{model}-64", many)):
            path = WORK / f"{name}.json"
            path.write_text(json.dumps(body))
            bodies[name] = (path, None, "application/json")
        names = entries[model]["feature_names"]
        rows = [[log[i % len(log)]["features"][n] for n in names] for i in range(256)]
        header = json.dumps({
            "inputs": [{"name": entries[model]["onnx"]["input"], "shape": [256, len(names)],
                        "datatype": "FP32", "parameters": {"binary_data_size": 256 * len(names) * 4}}],
            "parameters": {"binary_data_output": True},
        }).encode()
        import struct
        binary = b"".join(struct.pack(f"<{len(r)}f", *r) for r in rows)
        path = WORK / f"{model}-v2-256.bin"
        path.write_bytes(header + binary)
        bodies[f"{model}-v2-256"] = (path, len(header), "application/octet-stream")
        input_name = entries[model]["onnx"]["input"]
        for n in (1, 256):
            path = WORK / f"{model}-grpc-{n}.bin"
            path.write_bytes(grpc_frame(model_infer_request(model, input_name, rows[:n])))
            bodies[f"{model}-grpc-{n}"] = (path, None, "application/grpc")
    return bodies


def make_cnn_body(bodies, rows=256):
    """A 256-image V2 binary request for the CNN: zeros, the compute floor's input."""
    header = json.dumps({
        "inputs": [{"name": "pixels", "shape": [rows, 1, 8, 8], "datatype": "FP32",
                    "parameters": {"binary_data_size": rows * 64 * 4}}],
        "parameters": {"binary_data_output": True},
    }).encode()
    path = WORK / "cnn-v2-256.bin"
    path.write_bytes(header + bytes(rows * 64 * 4))
    bodies["cnn-v2-256"] = (path, len(header), "application/octet-stream")


def cnn_repository(typed_models):
    """A bare repository holding only the CNN (a link to the fixture's version folder)."""
    repo = WORK / "cnn-repository"
    shutil.rmtree(repo, ignore_errors=True)
    (repo / "cnn").mkdir(parents=True)
    (repo / "cnn" / "1").symlink_to(Path(typed_models).resolve() / "cnn" / "1")
    return repo


# A ModelInferRequest (proto/open_inference.proto) encoded by hand: three fields and one
# tensor need no protobuf library in the bench venv.
def varint(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number, payload):
    """A length-delimited field (strings, bytes, messages, packed repeated)."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def model_infer_request(model, input_name, rows):
    import struct
    shape = b"".join(varint(d) for d in (len(rows), len(rows[0])))
    tensor = field(1, input_name.encode()) + field(2, b"FP32") + field(3, shape)
    raw = b"".join(struct.pack(f"<{len(r)}f", *r) for r in rows)
    return field(1, model.encode()) + field(5, tensor) + field(7, raw)


def grpc_frame(message):
    """gRPC's length-prefixed message: not compressed, 4-byte big-endian length."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


# ---------------------------------------------------------------- servers

class Running:
    def __init__(self, name, argv, port, ready_path, env=None):
        self.name, self.port = name, port
        self.log = open(WORK / f"server-{re.sub(r'[^a-z0-9]+', '-', name.lower())}.log", "w")
        self.proc = subprocess.Popen(NICE + argv, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        deadline = time.monotonic() + 90
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited; see {self.log.name}")
            try:
                if ready_path is None:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{ready_path}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready; see {self.log.name}")
            time.sleep(0.1)

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def to_ms(value):
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()
    return float(number) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def wrk(url, body, connections, duration, server_pid):
    path, header_length, content_type = body
    env = dict(os.environ, BODY_FILE=str(path), CONTENT_TYPE=content_type,
               HEADER_LENGTH="" if header_length is None else str(header_length))
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "10s",
            "-s", str(REPO / "bench" / "post.lua"), url]
    server_before = cpu_seconds(server_pid)
    started = time.monotonic()
    proc = subprocess.Popen(NICE + argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    server_cpu = (cpu_seconds(server_pid) - server_before) / wall
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": rps,
        "p50_ms": to_ms(latency["50"]),
        "p99_ms": to_ms(latency["99"]),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
        "wrk_cores": (usage.ru_utime + usage.ru_stime) / wall,
        "server_cores": server_cpu,
    }


def h2load(url, body, connections, duration, server_pid):
    """One load over HTTP/2 (h2c prior knowledge): gRPC calls, or a REST body for comparison.
    h2load reports throughput but no percentiles, so p50/p99 stay unknown (None) here."""
    path, header_length, content_type = body
    argv = ["h2load", "-t1", f"-c{connections}", "-m1", f"-D{duration}", "-d", str(path),
            "-H", f"content-type: {content_type}"]
    if content_type == "application/grpc":
        argv += ["-H", "te: trailers"]
    if header_length is not None:
        argv += ["-H", f"inference-header-content-length: {header_length}"]
    server_before = cpu_seconds(server_pid)
    started = time.monotonic()
    proc = subprocess.Popen(NICE + argv + [url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    server_cpu = (cpu_seconds(server_pid) - server_before) / wall
    finished = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    counts = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    if os.waitstatus_to_exitcode(status) != 0 or not finished or not counts:
        raise RuntimeError(f"h2load failed:\n{out}")
    done, succeeded, failed, errored = (int(x) for x in counts.groups())
    return {
        "rps": float(finished.group(1)),
        "p50_ms": None,
        "p99_ms": None,
        "non_2xx": done - succeeded,
        "socket_errors": f"{failed} failed, {errored} errored" if failed or errored else "",
        "wrk_cores": (usage.ru_utime + usage.ru_stime) / wall,
        "server_cores": server_cpu,
    }


def grpc_failures(port):
    """The server's failed inference requests so far (gRPC answers HTTP 200 with the status in
    trailers, which h2load does not read: a load counts only if this did not move)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("ferrum_inference_request_failures_total"))


# ---------------------------------------------------------------- main

def machine():
    model = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = re.search(r"Model name:\s+(.*)", out).group(1).strip()
    except (OSError, AttributeError):
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "load_average_at_start": os.getloadavg(),
        "wrk": subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split("\n")[0].strip(),
    }


def median(values):
    values = sorted(values)
    n = len(values)
    return values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=4, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of warm-up before each run")
    parser.add_argument("--rounds", type=int, default=3,
                        help="each load runs this many times against every server, interleaved; "
                             "the table shows the median")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    parser.add_argument("--ferrum", default=str(REPO / "target/release/ferrum-serve"))
    parser.add_argument("--examples", default=str(REPO / "target/release/examples"))
    parser.add_argument("--before", metavar="BINARY",
                        help="an earlier ferrum-serve build to measure in the same run (single-row "
                             "loads, both batching modes), for before/after figures of a change")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--nice", type=int, default=-10,
                        help="run servers and wrk at this nice level (root only): on a machine shared "
                             "with other work it keeps the measured processes from being starved, "
                             "whatever their thread count (0 to disable)")
    parser.add_argument("--typed-models", metavar="DIR",
                        help="tests/typed_models/build.py's output: adds the CNN served as named "
                             "tensors (bench/run.sh builds it)")
    parser.add_argument("--render", action="store_true",
                        help="only re-render the table from <out>/latest.json")
    args = parser.parse_args()
    if args.render:
        data = json.loads((Path(args.out) / "latest.json").read_text())
        args.duration, args.warmup, args.rounds = data["settings"]
        table = render(data["machine"], data["results"], data["compute_floor"], args)
        (Path(args.out) / "latest.md").write_text(table)
        print(table)
        return
    global NICE
    NICE = ["nice", "-n", str(args.nice)] if args.nice and os.geteuid() == 0 else []
    if shutil.which("wrk") is None:
        sys.exit("wrk not found (bench/run.sh installs it)")
    bodies = make_bodies()
    info = machine()
    print(f"machine: {info}", flush=True)

    ferrum = lambda *flags: (lambda p, g: [args.ferrum, "--host", "127.0.0.1", "--port", str(p),
                                           "--grpc-port", str(g), *flags])
    fastapi = lambda *flags: (lambda p, g: [args.python, str(REPO / "bench" / "fastapi_server.py"),
                                         "--port", str(p), "--workers", "2", *flags])
    # name -> (argv for a port, readiness path)
    servers = {
        "ferrum batching=off": (ferrum("--batching", "off"), "/health/ready"),
        "ferrum batching=on": (ferrum("--batching", "on"), "/health/ready"),
        "ferrum batching=on delay=0": (ferrum("--batching", "on", "--max-queue-delay-us", "0"), "/health/ready"),
        "FastAPI (uvicorn h11/asyncio)": (fastapi("--http", "h11", "--loop", "asyncio"), "/health/ready"),
        "FastAPI (uvicorn httptools/uvloop)": (fastapi("--http", "httptools", "--loop", "uvloop"), "/health/ready"),
        "HTTP floor": (lambda p, g: [str(Path(args.examples) / "http_floor"), f"127.0.0.1:{p}"], None),
    }
    all_servers = list(servers)
    modes = ["ferrum batching=off", "ferrum batching=on"]
    cnn_modes = []
    if args.typed_models:
        make_cnn_body(bodies)
        cnn_repo = str(cnn_repository(args.typed_models))
        for mode in ("off", "on"):
            servers[f"cnn ferrum batching={mode}"] = (
                ferrum("--batching", mode, "--models-dir", cnn_repo, "--manifest", "none"), "/health/ready")
            cnn_modes.append(f"cnn ferrum batching={mode}")
    befores = []
    if args.before:
        # The earlier build may predate --grpc-port: it is given the HTTP port only.
        before = lambda *flags: (lambda p, g: [args.before, "--host", "127.0.0.1", "--port", str(p), *flags])
        for mode in ("off", "on"):
            servers[f"before batching={mode}"] = (before("--batching", mode), "/health/ready")
            befores.append(f"before batching={mode}")
    fastapis = ["FastAPI (uvicorn h11/asyncio)", "FastAPI (uvicorn httptools/uvloop)"]
    # (model, load, path, body, rows, concurrency, servers, protocol): "http1" loads run wrk
    # on the HTTP port, "h2c" h2load on the HTTP port, "grpc" h2load on the gRPC port.
    loads = []
    for c in (1, 8, 64):
        loads.append(("breast-cancer", "single row by name", "/models/{m}/predict", "{m}-1", 1, c,
                      all_servers + befores, "http1"))
    loads.append(("breast-cancer", "64 rows by name", "/models/{m}/predict", "{m}-64", 64, 8,
                  modes + fastapis + ["HTTP floor"], "http1"))
    loads.append(("breast-cancer", "256 rows V2 binary", "/v2/models/{m}/infer", "{m}-v2-256", 256, 8,
                  modes + fastapis, "http1"))
    # gRPC against REST over the same HTTP/2 load generator (h2load), and single-row gRPC beside
    # the single-row REST figures above.
    loads.append(("breast-cancer", "256 rows V2 binary (h2c)", "/v2/models/{m}/infer", "{m}-v2-256", 256, 8,
                  modes, "h2c"))
    loads.append(("breast-cancer", "256 rows gRPC", GRPC_INFER, "{m}-grpc-256", 256, 8, modes, "grpc"))
    for c in (8, 64):
        loads.append(("breast-cancer", "single row gRPC", GRPC_INFER, "{m}-grpc-1", 1, c, modes, "grpc"))
    for c in (1, 8, 64):
        loads.append(("diabetes", "single row by name", "/models/{m}/predict", "{m}-1", 1, c, modes, "http1"))
    if cnn_modes:
        loads.append(("cnn", "256 rows V2 binary", "/v2/models/{m}/infer", "{m}-v2-256", 256, 8, cnn_modes,
                      "http1"))

    env = dict(os.environ, LOG_FORMAT="json")
    running = {}
    results = []
    try:
        for name, (argv, ready) in servers.items():
            port, grpc_port = free_port(), free_port()
            running[name] = Running(name, argv(port, grpc_port), port, ready, env)
            running[name].grpc_port = grpc_port
            print(f"started {name} on port {port}", flush=True)
        for model, load, path, body, rows, c, names, protocol in loads:
            runs = {name: [] for name in names}
            tool = wrk if protocol == "http1" else h2load
            for round_ in range(args.rounds):
                for name in names:
                    server = running[name]
                    port = server.grpc_port if protocol == "grpc" else server.port
                    url = f"http://127.0.0.1:{port}{path.format(m=model)}"
                    b = bodies[body.format(m=model)]
                    failures = grpc_failures(server.port) if protocol == "grpc" else 0
                    tool(url, b, c, args.warmup, server.proc.pid)
                    run = tool(url, b, c, args.duration, server.proc.pid)
                    if protocol == "grpc" and grpc_failures(server.port) != failures:
                        raise RuntimeError(f"{name}: gRPC calls failed during {load}; see its log")
                    runs[name].append(run)
            for name in names:
                rs = runs[name]
                r = {key: median([x[key] for x in rs]) if rs[0][key] is not None else None
                     for key in ("rps", "p50_ms", "p99_ms", "wrk_cores", "server_cores")}
                r.update(server=name, model=model, load=load, rows=rows, c=c,
                         rows_per_s=r["rps"] * rows, non_2xx=sum(x["non_2xx"] for x in rs),
                         rounds_rps=[x["rps"] for x in rs],
                         socket_errors="; ".join(x["socket_errors"] for x in rs if x["socket_errors"]))
                results.append(r)
                print(f"{model:14} {load:20} c={c:<3} {name:36} {r['rps']:>9.0f} req/s {r['rows_per_s']:>10.0f} rows/s "
                      f"p50 {ms(r['p50_ms'])} ms p99 {ms(r['p99_ms'])} ms  wrk {r['wrk_cores']:.2f} "
                      f"server {r['server_cores']:.2f} cores  non-2xx {r['non_2xx']} "
                      f"rounds {[round(x) for x in r['rounds_rps']]}", flush=True)
    finally:
        for server in running.values():
            server.stop()

    print("\n== compute floor (in-process ONNX Runtime)", flush=True)
    compute = []
    floors = [("breast-cancer", [])]
    if args.typed_models:
        floors.append(("cnn", [str(cnn_repository(args.typed_models))]))
    for model, repository in floors:
        out = subprocess.run(NICE + [str(Path(args.examples) / "compute_floor"), model, "3", "2", *repository],
                             cwd=REPO, capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            compute.append(json.loads(line))
            print(line, flush=True)

    info["load_average_at_end"] = os.getloadavg()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "latest.json").write_text(json.dumps(
        {"machine": info, "results": results, "compute_floor": compute,
         "settings": [args.duration, args.warmup, args.rounds], "nice": args.nice}, indent=1))
    table = render(info, results, compute, args)
    (out_dir / "latest.md").write_text(table)
    print("\n" + table)
    bad = [r for r in results if r["non_2xx"]]
    if bad:
        sys.exit(f"{len(bad)} loads had non-2xx responses: the figures above are not valid")


def ms(value):
    """A latency cell: h2load loads have none."""
    return "n/a" if value is None else f"{value:7.3f}".strip()


def find(results, server, load, c, model="breast-cancer"):
    for r in results:
        if (r["server"], r["load"], r["c"], r["model"]) == (server, load, c, model):
            return r
    return None


def render(info, results, compute, args):
    lines = [
        f"Machine: {info['nproc']} cores, {info['cpu']}, kernel {info['kernel']}; load average at start "
        f"{', '.join(f'{x:.2f}' for x in info['load_average_at_start'])}, at end "
        f"{', '.join(f'{x:.2f}' for x in info.get('load_average_at_end', []))} (the machine is shared); "
        f"servers and wrk at nice {getattr(args, 'nice', 0)}; {info['wrk'].split(' Copyright')[0]} -t1, "
        f"{args.duration} s per run after a {args.warmup} s warm-up; median of {args.rounds} interleaved rounds.",
        "",
        "| server | model | load | c | req/s | rows/s | p50 ms | p99 ms | wrk cores | server cores | req/s per server core |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        per_core = r["rps"] / r["server_cores"] if r["server_cores"] else 0
        lines.append(
            f"| {r['server']} | {r['model']} | {r['load']} | {r['c']} | {r['rps']:,.0f} | {r['rows_per_s']:,.0f} | "
            f"{ms(r['p50_ms'])} | {ms(r['p99_ms'])} | {r['wrk_cores']:.2f} | {r['server_cores']:.2f} | {per_core:,.0f} |")
    lines += ["", "Compute floor, in-process ONNX Runtime (one intra-op thread per session):", "",
              "| model | batch | threads | rows/s | µs per call |", "|---|---:|---:|---:|---:|"]
    for c in compute:
        lines.append(f"| {c.get('model', 'breast-cancer')} | {c['batch']} | {c['threads']} | "
                     f"{c['rows_per_s']:,.0f} | {c['us_per_call']:.1f} |")

    def floor(model):
        return max((c["rows_per_s"] for c in compute
                    if c["batch"] == 256 and c.get("model", "breast-cancer") == model), default=0)
    floor256 = floor("breast-cancer")
    lines += ["", "Targets (FastAPI = the calibrated fair baseline: uvicorn's default h11/asyncio, 2 workers, "
              "TCP_NODELAY fixed; the httptools/uvloop rows above are the stronger Python set-up):", "",
              "| target | ferrum batching=off | ferrum batching=on | goal |", "|---|---:|---:|---|"]

    def ratio(mode, fn):
        try:
            return fn(mode)
        except (TypeError, ZeroDivisionError):
            return None

    fast = "FastAPI (uvicorn h11/asyncio)"
    checks = [
        ("single row c=64 vs FastAPI", lambda m: find(results, m, "single row by name", 64)["rps"] /
         find(results, fast, "single row by name", 64)["rps"], ">= 15x", 15, "x"),
        ("single row c=64 vs HTTP floor", lambda m: find(results, m, "single row by name", 64)["rps"] /
         find(results, "HTTP floor", "single row by name", 64)["rps"], ">= 80%", 0.80, "%"),
        ("p99 single row c=8 (ms)", lambda m: find(results, m, "single row by name", 8)["p99_ms"], "<= 2 ms", 2.0, "ms"),
        ("64-row rows/s vs FastAPI", lambda m: find(results, m, "64 rows by name", 8)["rows_per_s"] /
         find(results, fast, "64 rows by name", 8)["rows_per_s"], ">= 10x", 10, "x"),
        ("256-row binary rows/s vs in-process ORT", lambda m: find(results, m, "256 rows V2 binary", 8)["rows_per_s"] /
         floor256, ">= 50%", 0.50, "%"),
        ("CNN (named tensors) 256-row V2 binary rows/s vs in-process ORT",
         lambda m: find(results, "cnn " + m, "256 rows V2 binary", 8, "cnn")["rows_per_s"] / floor("cnn"),
         ">= 80%", 0.80, "%"),
        ("256-row gRPC rows/s vs V2 binary REST (both h2load)",
         lambda m: find(results, m, "256 rows gRPC", 8)["rows_per_s"] /
         find(results, m, "256 rows V2 binary (h2c)", 8)["rows_per_s"], ">= 100%", 1.0, "%"),
    ]
    for label, fn, goal, threshold, unit in checks:
        cells = []
        for mode in ("ferrum batching=off", "ferrum batching=on"):
            v = ratio(mode, fn)
            if v is None:
                cells.append("n/a")
                continue
            met = v <= threshold if unit == "ms" else v >= threshold
            shown = f"{v:.2f} ms" if unit == "ms" else (f"{v * 100:.0f}%" if unit == "%" else f"{v:.1f}x")
            cells.append(f"{shown} {'met' if met else 'MISSED'}")
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | {goal} |")

    def per_core(server, load, c):
        r = find(results, server, load, c)
        return r["rows_per_s"] / r["server_cores"]

    lines += ["", "The same throughput ratios per server core (rows/s divided by the CPU the server "
              "process actually got: robust to how much of the shared machine each run was given):", "",
              "| target | ferrum batching=off | ferrum batching=on | goal |", "|---|---:|---:|---|"]
    per_core_checks = [
        ("single row c=64 vs FastAPI", "single row by name", 64, fast, 15, "x", ">= 15x"),
        ("single row c=64 vs HTTP floor", "single row by name", 64, "HTTP floor", 0.80, "%", ">= 80%"),
        ("64-row rows/s vs FastAPI", "64 rows by name", 8, fast, 10, "x", ">= 10x"),
    ]
    for label, load, c, other, threshold, unit, goal in per_core_checks:
        cells = []
        for mode in ("ferrum batching=off", "ferrum batching=on"):
            v = ratio(mode, lambda m: per_core(m, load, c) / per_core(other, load, c))
            if v is None:
                cells.append("n/a")
                continue
            shown = f"{v * 100:.0f}%" if unit == "%" else f"{v:.1f}x"
            cells.append(f"{shown} {'met' if v >= threshold else 'MISSED'}")
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | {goal} |")
    if any(r["server"].startswith("before ") for r in results):
        lines += ["", "This build against the earlier one (`--before`), single row by name, breast-cancer, "
                  "same run:", "",
                  "| batching | c | req/s before | req/s now | now / before | per core now / before "
                  "| p99 ms before | p99 ms now |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for mode in ("off", "on"):
            for c in (1, 8, 64):
                old = find(results, f"before batching={mode}", "single row by name", c)
                new = find(results, f"ferrum batching={mode}", "single row by name", c)
                if not old or not new:
                    continue
                core = ((new["rps"] / new["server_cores"]) / (old["rps"] / old["server_cores"])
                        if new["server_cores"] and old["server_cores"] else 0)
                lines.append(f"| {mode} | {c} | {old['rps']:,.0f} | {new['rps']:,.0f} | "
                             f"{new['rps'] / old['rps'] * 100:.0f}% | {core * 100:.0f}% | "
                             f"{old['p99_ms']:.3f} | {new['p99_ms']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

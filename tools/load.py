"""Load a running `atman-onnx serve`, and compare it with the library in the same run.

- closed loop (`--clients N --seconds S`): each client posts one explanation and the next as soon as its reply comes;
  throughput, p50/p95 latency, statuses, and the server's RSS once a second (VmRSS of `--pid`, else the service's
  `process_resident_memory_bytes` from /metrics), with its growth from minute 2 to the end (a leak shows there, past
  warm-up; absent in runs shorter than 2 minutes);
- `--burst K`: max_concurrent + max_queued + K requests at once (the limits from GET /v1/models): exactly K must be
  503 and the rest 200, each equal to the library's answer (an `Explainer` on `--folder`, the folder served);
- `--cost`: one explanation's latency through the service against `Explainer.run` on `--folder` in this process.
Prints a markdown table (and `--json OUT`); exits 1 when the burst check fails.
Usage: python tools/load.py URL [--model NAME] [--prompt T] [--target T] [--batch-size N] [--clients N]
[--seconds S] [--pid PID] [--burst K] [--cost] [--folder DIR] [--api-key KEY] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from atman_onnx import Explainer, ExplainRequest

PROMPT = "Alice lives in Paris and Bob lives in Rome. Bob lives in the city of"
TARGET = " Rome"
RSS_EVERY_S = 1.0
GROWTH_FROM_S = 120.0
TOLERANCE = 1e-4  # on relevance, service against library (same graph, same batch size)


class Service:
    """The service under load: its address, key, model and the request body every client sends."""

    def __init__(self, url: str, api_key: str | None, model: str | None, body: dict[str, Any]):
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        described = httpx.get(self.url + "/v1/models", headers=self.headers, timeout=30).raise_for_status().json()
        models = {m["name"]: m for m in described["models"]}
        self.model = models[model or next(iter(models))]
        self.body = {"model": self.model["name"], **body}

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=600)

    def explain(self, client: httpx.Client) -> tuple[int, float, dict[str, Any] | None]:
        """One explanation: status, seconds, and the reply's object when it is 200."""
        started = time.perf_counter()
        reply = client.post("/v1/explain", json=self.body)
        seconds = time.perf_counter() - started
        return reply.status_code, seconds, reply.json() if reply.status_code == 200 else None

    def rss_mb(self, pid: int | None) -> float:
        """The server's resident memory: VmRSS of ``pid`` when given (same machine), else from /metrics."""
        if pid is not None:
            status = Path(f"/proc/{pid}/status").read_text()
            return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024
        text = httpx.get(self.url + "/metrics", timeout=30).text
        return float(re.search(r"^process_resident_memory_bytes (\S+)$", text, re.M).group(1)) / 2**20


def closed_loop(service: Service, clients: int, seconds: float, pid: int | None) -> dict[str, Any]:
    """``clients`` clients posting back to back for ``seconds``, the server's RSS sampled meanwhile."""
    stop = threading.Event()
    samples: list[tuple[float, float]] = []
    started = time.perf_counter()

    def sample_rss() -> None:
        while not stop.is_set():
            samples.append((time.perf_counter() - started, service.rss_mb(pid)))
            stop.wait(RSS_EVERY_S)

    def client_loop() -> list[tuple[int, float]]:
        done = []
        with service.client() as client:
            while time.perf_counter() - started < seconds:
                status, took, _ = service.explain(client)
                done.append((status, took))
        return done

    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    with ThreadPoolExecutor(clients) as pool:
        results = [r for rs in pool.map(lambda _: client_loop(), range(clients)) for r in rs]
    elapsed = time.perf_counter() - started
    stop.set()
    sampler.join()
    ok = sorted(took for status, took in results if status == 200)
    late = [rss for t, rss in samples if t >= GROWTH_FROM_S]
    return {
        "clients": clients,
        "seconds": round(elapsed, 2),
        "requests": len(results),
        "throughput_per_s": round(len(ok) / elapsed, 3),
        "p50_s": round(statistics.median(ok), 3) if ok else None,
        "p95_s": round(ok[min(len(ok) - 1, int(0.95 * len(ok)))], 3) if ok else None,
        "statuses": dict(sorted(Counter(str(status) for status, _ in results).items())),
        "rss_mb": [[round(t, 1), round(rss, 1)] for t, rss in samples],
        "rss_growth_after_2min_mb": round(late[-1] - late[0], 1) if len(late) > 1 else None,
    }


def burst(service: Service, extra: int, reference: np.ndarray) -> dict[str, Any]:
    """Every slot and queue place plus ``extra`` requests at once: ``extra`` 503s, the rest the library's answer."""
    limits = service.model["limits"]
    count = limits["max_concurrent"] + limits["max_queued"] + extra
    clients = [service.client() for _ in range(count)]
    for client in clients:  # connected beforehand, so the burst is only the requests
        client.get("/health").raise_for_status()
    gate = threading.Barrier(count)

    def fire(client: httpx.Client) -> tuple[int, float, dict[str, Any] | None]:
        gate.wait()
        return service.explain(client)

    with ThreadPoolExecutor(count) as pool:
        results = list(pool.map(fire, clients))
    for client in clients:
        client.close()
    statuses = Counter(status for status, _, _ in results)
    same = [np.allclose(np.array(body["relevance"]), reference, atol=TOLERANCE) for _, _, body in results if body]
    return {
        "sent": count,
        "extra": extra,
        "statuses": {str(s): n for s, n in sorted(statuses.items())},
        "equal_to_library": sum(same),
        "ok": statuses[503] == extra and statuses[200] == count - extra and all(same),
    }


def cost(service: Service, explainer: Explainer, request: ExplainRequest, repeats: int) -> dict[str, Any]:
    """One explanation's seconds through the service and through the library: after one warm-up run of each,
    ``repeats`` pairs, alternating, so that both sides see the same machine; medians and their ratio."""
    served, direct = [], []
    with service.client() as client:
        service.explain(client)
        explainer.run(request)
        for _ in range(repeats):
            served.append(service.explain(client)[1])
            started = time.perf_counter()
            explainer.run(request)
            direct.append(time.perf_counter() - started)
    s, d = statistics.median(served), statistics.median(direct)
    return {
        "service_s": round(s, 3),
        "library_s": round(d, 3),
        "service_over_library": round(s / d, 3),
        "pairs": [[round(a, 2), round(b, 2)] for a, b in zip(served, direct)],
    }


def table(report: dict[str, Any]) -> str:
    """The report as one markdown table of part, measure and value (the RSS series shortened to first and last)."""
    rows = ["| part | measure | value |", "|---|---|---|"]
    for part, measures in report.items():
        for name, value in measures.items():
            if name == "rss_mb" and value:
                value = f"{value[0][1]} at {value[0][0]} s .. {value[-1][1]} at {value[-1][0]} s ({len(value)} samples)"
            rows.append(f"| {part} | {name} | {value} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--model")
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--target", default=TARGET)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--clients", type=int, default=0, help="closed-loop clients (0: no closed loop)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--pid", type=int, help="the server's process id, to read its VmRSS")
    parser.add_argument("--burst", type=int, metavar="K")
    parser.add_argument("--cost", action="store_true")
    parser.add_argument("--repeats", type=int, default=3, help="pairs of service and library runs for --cost")
    parser.add_argument("--folder", type=Path, help="the exported folder served (for --burst and --cost)")
    parser.add_argument("--api-key")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if (args.burst is not None or args.cost) and args.folder is None:
        parser.error("--burst and --cost compare with the library: give --folder")
    body = {"prompt": args.prompt, "target": args.target}
    if args.batch_size:
        body["batch_size"] = args.batch_size
    service = Service(args.url, args.api_key, args.model, body)
    report: dict[str, dict[str, Any]] = {}
    if args.clients:
        report["load"] = closed_loop(service, args.clients, args.seconds, args.pid)
    if args.folder is not None:
        explainer = Explainer.load(args.folder, provider=service.model["provider"])
        request = ExplainRequest.from_dict(body)
        if args.burst is not None:
            report["burst"] = burst(service, args.burst, explainer.run(request).relevance)
        if args.cost:
            report["cost"] = cost(service, explainer, request, args.repeats)
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0 if report.get("burst", {}).get("ok", True) else 1


if __name__ == "__main__":
    raise SystemExit(main())

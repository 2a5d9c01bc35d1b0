"""The E2B drop-in's benchmark (suite `e2b`): E2B's SDK against corrald, beside corral's own API.

Run by `scripts/test-e2b.sh --bench`, which starts corrald with a warm pool of the `e2b` template.
Measures, in one run:
- create_to_first_run: `Sandbox.create()` to the end of the first `commands.run("true")`, with
  a warm member waiting each time;
- run_true_sdk: `commands.run("true")` through the SDK, round trip;
- run_true_corral: the same command through corral's own API (`POST /v1/sandboxes/{id}/exec`,
  one keep-alive connection), on the same sandbox, interleaved with the SDK's. The same command
  means what the SDK runs for `commands.run("true")`: `/bin/bash -l -c true`, whose login shell
  alone takes several milliseconds.
Writes p50/p95 in milliseconds to E2B_BENCH_JSON and prints them.
"""

import http.client
import json
import os
import statistics
import subprocess
import time
import urllib.parse

from e2b import Sandbox

API = os.environ["E2B_API_URL"]
KEY = os.environ["E2B_API_KEY"]
SOCKET_POOLS = os.environ["E2B_BENCH_SOCKET"]
RUNS = int(os.environ.get("E2B_BENCH_RUNS", "200"))
CREATES = int(os.environ.get("E2B_BENCH_CREATES", "10"))


def percentiles(samples):
    ordered = sorted(samples)
    return {
        "p50": round(statistics.median(ordered), 2),
        "p95": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 2),
        "n": len(ordered),
    }


def wait_for_idle_member():
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if idle() >= 1:
            return
        time.sleep(0.1)
    raise RuntimeError("the e2b pool did not refill within 60 s")


def idle():
    out = subprocess.run(
        ["curl", "-sS", "--unix-socket", SOCKET_POOLS, "http://corral/v1/pools"], capture_output=True, check=True
    ).stdout
    return sum(p.get("idle", 0) for p in json.loads(out))


def corral_exec(connection, sandbox_id):
    body = json.dumps({"command": ["/bin/bash", "-l", "-c", "true"]})
    connection.request(
        "POST",
        f"/v1/sandboxes/{sandbox_id}/exec",
        body=body,
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    response = connection.getresponse()
    lines = response.read().decode().splitlines()
    assert response.status == 200 and '"exitCode":0' in lines[-1].replace(" ", ""), lines


def main():
    creates = []
    for _ in range(CREATES):
        wait_for_idle_member()
        start = time.perf_counter()
        sbx = Sandbox.create()
        sbx.commands.run("true")
        creates.append((time.perf_counter() - start) * 1000)
        sbx.kill()

    sbx = Sandbox.create()
    try:
        url = urllib.parse.urlparse(API)
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        sdk, own = [], []
        for _ in range(10):  # warm both paths up
            sbx.commands.run("true")
            corral_exec(connection, sbx.sandbox_id)
        for _ in range(RUNS):
            start = time.perf_counter()
            sbx.commands.run("true")
            sdk.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            corral_exec(connection, sbx.sandbox_id)
            own.append((time.perf_counter() - start) * 1000)
    finally:
        sbx.kill()

    report = {
        "suite": "e2b",
        "create_to_first_run": percentiles(creates),
        "run_true_sdk": percentiles(sdk),
        "run_true_corral": percentiles(own),
    }
    report["sdk_over_corral_p50_ms"] = round(report["run_true_sdk"]["p50"] - report["run_true_corral"]["p50"], 2)
    with open(os.environ["E2B_BENCH_JSON"], "w") as handle:
        json.dump(report, handle, indent=2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

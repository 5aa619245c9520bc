"""Where the test suite's time goes: which tests start Python interpreters of their own (a
fresh interpreter pays the imports before it does anything: ~11 s with Lightning on a 2-core
build machine), how many, and how much of the suite's time those tests take.

    python benchmarks/suite_time.py                   # the suite as `make test` runs it,
    python benchmarks/suite_time.py tests/test_run.py # or any pytest arguments

It runs pytest (2 workers, one torch thread each, as `make test`; `-m 'not slurm'` unless
arguments are given) with a `sitecustomize` on PYTHONPATH that makes every interpreter a test
starts write, at exit, the test it came from (pytest's PYTEST_CURRENT_TEST, which children
inherit) and how long it lived (it shadows a sitecustomize of the Python install, if any);
interpreters killed by a signal write nothing. Each test's time (setup, call and teardown)
comes from pytest's own reports. Not part of `make bench`: it runs the whole suite.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SITECUSTOMIZE = """
import atexit, json, os, sys, time

if os.environ.get("SUITE_TIME_LOG") and os.environ.get("PYTEST_CURRENT_TEST"):
    _start, _test = time.time(), os.environ["PYTEST_CURRENT_TEST"]

    def _record():
        with open(os.environ["SUITE_TIME_LOG"], "a") as f:
            f.write(json.dumps({"test": _test, "seconds": time.time() - _start,
                                "lightning": "lightning" in sys.modules}) + "\\n")

    atexit.register(_record)
"""

PLUGIN = """
import json, os
from collections import defaultdict

_times = defaultdict(float)

def pytest_runtest_logreport(report):
    _times[report.nodeid] += report.duration

def pytest_sessionfinish(session):
    if not hasattr(session.config, "workerinput"):  # the controller: every worker's reports
        with open(os.environ["SUITE_TIME_TESTS"], "w") as f:
            json.dump(_times, f)
"""


def main() -> int:
    args = sys.argv[1:] or ["-m", "not slurm"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "sitecustomize.py").write_text(SITECUSTOMIZE)
        (tmp / "suite_time_plugin.py").write_text(PLUGIN)
        log, tests_file = tmp / "interpreters.jsonl", tmp / "tests.json"
        env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}  # run in a test
        path = os.pathsep.join([str(tmp), os.environ.get("PYTHONPATH", "")])
        env |= {
            "OMP_NUM_THREADS": "1",
            "SUITE_TIME_LOG": str(log),
            "SUITE_TIME_TESTS": str(tests_file),
            "PYTHONPATH": path,
        }
        command = [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-q",
                   "-p", "suite_time_plugin", "-p", "no:cacheprovider", *args]  # fmt: skip
        start = time.perf_counter()
        result = subprocess.run(command, cwd=ROOT, env=env, stdout=sys.stderr)  # its summary
        wall = time.perf_counter() - start
        tests = json.loads(tests_file.read_text())
        lines = log.read_text().splitlines() if log.exists() else []
    started: dict[str, list[dict]] = {}
    for record in map(json.loads, lines):
        test = re.sub(r" \((setup|call|teardown)\)$", "", record["test"])
        started.setdefault(test, []).append(record)
    total = sum(tests.values())
    own = {t: tests.get(t, 0.0) for t in started}
    print(f"pytest {' '.join(args)} (exit {result.returncode}): {wall:.0f} s wall, "
          f"{total:.0f} s of test time in {len(tests)} tests")  # fmt: skip
    print(f"{len(own)} tests start {len(lines)} interpreters "
          f"({sum(r['lightning'] for r in map(json.loads, lines))} import Lightning) and take "
          f"{sum(own.values()):.0f} s of test time, {sum(own.values()) / 2:.0f} s of wall time "
          f"on 2 workers at best; the rest ({len(tests) - len(own)} tests) take "
          f"{total - sum(own.values()):.0f} s")  # fmt: skip
    print("\n| test | interpreters | their lifetimes (s) | test time (s) |\n|---|--:|--:|--:|")
    for test, seconds in sorted(own.items(), key=lambda kv: -kv[1]):
        lives = sum(r["seconds"] for r in started[test])
        print(f"| {test} | {len(started[test])} | {lives:.0f} | {seconds:.1f} |")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())

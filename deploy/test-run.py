#!/usr/bin/env python3
"""`make test` with a running commentary: build the test binaries first (saying so), then run
every suite, announcing each with its package and its backends, and end with one summary
line per suite; a failing suite prints the command that runs it alone.

    python3 deploy/test-run.py [cargo test args...]      (make test passes them)

cargo's own output streams through unchanged; the extra lines start with "==>" (progress)
or are the summary table at the end. The exit status is cargo's. `--no-fail-fast` is
added, so a failing suite does not hide the verdicts of the ones after it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

RUNNING = re.compile(r"^\s+Running (.+?) \((\S+)\)\s*$")
DOCTESTS = re.compile(r"^\s+Doc-tests (\S+)\s*$")
RESULT = re.compile(
    r"^test result: (ok|FAILED)\. (\d+) passed; (\d+) failed; (\d+) ignored; \d+ measured; \d+ filtered out"
)
BOLD, RED, GREEN, OFF = ("\033[1m", "\033[31m", "\033[32m", "\033[0m") if sys.stdout.isatty() else ("",) * 4


def say(line: str) -> None:
    print(f"{BOLD}==> {line}{OFF}", flush=True)


def backends() -> str:
    db = os.environ.get("TEST_DATABASE_URL", "")
    if db:
        db = "PostgreSQL " + re.sub(r"//([^:@/]+):[^@/]*@", r"//\1:***@", db)
    else:
        db = "SQLite (embedded)"
    kafka = os.environ.get("TEST_KAFKA_BROKERS", "")
    kafka = f"Kafka at {kafka}" if kafka else "embedded mock broker (librdkafka)"
    return f"database={db}, kafka={kafka}"


def package_name(package_id: str) -> str:
    # "path+file:///work/main/services/order#cloudmart-order@0.1.0" or "... #0.1.0" (name = dir)
    frag = package_id.rsplit("#", 1)[-1]
    if "@" in frag:
        return frag.split("@", 1)[0]
    return package_id.rsplit("#", 1)[0].rstrip("/").rsplit("/", 1)[-1]


def build(cargo: str, args: list[str]) -> dict[str, tuple[str, str, str]] | int:
    """cargo test --no-run; executable path -> (package, target kind, target name)."""
    say("building the test binaries (cargo test --no-run)")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [cargo, "test", "--no-run", "--message-format=json-render-diagnostics", *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    exes: dict[str, tuple[str, str, str]] = {}
    assert proc.stdout is not None
    for line in proc.stdout:
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            print(line, end="")
            continue
        if msg.get("reason") == "compiler-artifact" and msg.get("executable"):
            target = msg["target"]
            exes[msg["executable"]] = (package_name(msg["package_id"]), target["kind"][0], target["name"])
    rc = proc.wait()
    if rc != 0:
        say(f"{RED}building the tests failed{OFF} (exit {rc})")
        return rc
    say(f"built {len(exes)} test binaries in {time.monotonic() - t0:.0f} s")
    return exes


def rerun_command(profile_args: list[str], package: str, kind: str, name: str) -> str:
    base = " ".join(["cargo test", *profile_args, "-p", package])
    if kind == "lib":
        return f"{base} --lib"
    if kind == "bin":
        return f"{base} --bin {name}"
    if kind == "doc":
        return f"{base} --doc"
    return f"{base} --test {name}"


def main() -> int:
    cargo = os.environ.get("CARGO", "cargo")
    args = sys.argv[1:]
    profile_args = []
    for i, a in enumerate(args):
        if a in ("--profile", "--release") or a.startswith("--profile="):
            profile_args = args[i : i + (2 if a == "--profile" else 1)]
    exes = build(cargo, args)
    if isinstance(exes, int):
        return exes
    say(f"running the suites; backends: {backends()}")
    suites: list[dict] = []
    current: dict | None = None
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [cargo, "test", "--no-fail-fast", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        m = RUNNING.match(line)
        d = DOCTESTS.match(line)
        if m or d:
            if m:
                exe = m.group(2)
                package, kind, name = exes.get(exe, ("?", "test", os.path.basename(exe).rsplit("-", 1)[0]))
                label = f"{package} {m.group(1)}"
            else:
                package, kind, name = d.group(1).replace("_", "-"), "doc", d.group(1)
                label = f"{package} doc-tests"
            current = {"label": label, "package": package, "kind": kind, "name": name, "start": time.monotonic()}
            suites.append(current)
            say(f"suite {len(suites)}: {label}")
        print(line, end="", flush=True)
        r = RESULT.match(line)
        if r and current is not None:
            current.update(
                ok=r.group(1) == "ok",
                passed=int(r.group(2)),
                failed=int(r.group(3)),
                ignored=int(r.group(4)),
                secs=time.monotonic() - current["start"],
            )
    rc = proc.wait()
    print()
    say(f"summary: {len(suites)} suites in {time.monotonic() - t0:.0f} s ({backends()})")
    width = max((len(s["label"]) for s in suites), default=10)
    for s in suites:
        if "ok" not in s:
            # the binary crashed before printing its result line
            s.update(ok=False, passed=0, failed=0, ignored=0, secs=time.monotonic() - s["start"])
            verdict = f"{RED}CRASHED{OFF}"
        else:
            verdict = f"{GREEN}ok{OFF}    " if s["ok"] else f"{RED}FAILED{OFF}"
        line = (
            f"  {verdict} {s['label']:<{width}}  {s['passed']:>4} passed {s['failed']:>3} failed"
            f" {s['ignored']:>3} ignored  {s['secs']:>6.1f} s"
        )
        if not s["ok"]:
            line += f"   run alone: {rerun_command(profile_args, s['package'], s['kind'], s['name'])}"
        print(line)
    failed = [s for s in suites if not s["ok"]]
    if rc != 0 and not failed:
        say(f"{RED}cargo test failed (exit {rc}) outside any suite{OFF}")
    elif failed:
        say(f"{RED}{len(failed)} of {len(suites)} suites failed{OFF}")
    else:
        say(f"{GREEN}all {len(suites)} suites passed{OFF}")
    return rc


if __name__ == "__main__":
    sys.exit(main())

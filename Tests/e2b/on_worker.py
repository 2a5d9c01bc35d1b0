"""E2B's SDK against a control plane whose tenant is bound to a worker group (scripts/test-fleet.sh).

Creates a sandbox with E2B_API_KEY at E2B_API_URL, runs a command (envd's streaming Start),
writes and reads a file, lists, and kills it; prints the sandbox's id first, so that the script
can look for it on the worker's engine (and see it gone after the kill), then one line per
check, and exits 1 if one failed.
"""

import sys

from e2b import Sandbox


def main():
    failures = 0

    def check(what, ok, seen):
        nonlocal failures
        print(("ok " if ok else "FAILED ") + what + ("" if ok else ": " + repr(seen)), flush=True)
        failures += 0 if ok else 1

    sandbox = Sandbox.create(timeout=300)
    print(sandbox.sandbox_id, flush=True)
    try:
        run = sandbox.commands.run("echo out-$((6*7)); echo err >&2")
        check("commands.run streams its output", run.stdout == "out-42\n" and run.stderr == "err\n", run)
        sandbox.files.write("/tmp/on-worker.txt", "payload")
        read = sandbox.files.read("/tmp/on-worker.txt")
        check("files.write then files.read", read == "payload", read)
        listed = [info.sandbox_id for info in Sandbox.list().next_items()]
        check("Sandbox.list names it", sandbox.sandbox_id in listed, listed)
    finally:
        sandbox.kill()
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()

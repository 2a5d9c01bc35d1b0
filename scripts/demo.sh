#!/usr/bin/env bash
# scripts/demo.sh: what `make run` shows once the machine is prepared.
#
# Placeholder until the sandbox layer and the CLI land: it prints the steps the demo will
# take and exits 0, so that `make run` can already be used to prepare a machine.
set -euo pipefail

cat <<'TEXT'
corral demo (placeholder: the sandbox commands are not written yet)

The machine is prepared: packages, engine, corral/base:bookworm, and the build. Once the
CLI exists, this demo will:
  1. corral doctor                          engine, API version, runtimes, base image
  2. corral sandbox create --json           a hardened sandbox from corral/base:bookworm
  3. corral tool ID bash '{"command":"uname -a; id; ls -la /workspace"}'
  4. corral tool ID str_replace_based_edit_tool '{"command":"create","path":"/workspace/hello.py",...}'
  5. corral tool ID bash '{"command":"python3 /workspace/hello.py"}'
  6. corral sandbox rm ID                   and show that nothing is left behind
TEXT

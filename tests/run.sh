#!/usr/bin/env bash
# The whole test suite: starts what the tests need (a throwaway Samba AD DC, installed if
# missing), then runs every test of the workspace. The Graph simulator starts inside the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/samba/samba-dc.sh ensure >/dev/null

# Test binaries run one after another (the reconnect test restarts the shared DC); the tests
# inside one binary run in parallel.
cargo test --workspace "$@"

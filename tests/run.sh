#!/usr/bin/env bash
# The whole test suite: starts what the tests need (a throwaway Samba AD DC, installed if
# missing), then runs every test of the workspace (the Graph simulator starts inside the tests),
# then checks the infrastructure template.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/samba/samba-dc.sh ensure >/dev/null

# Test binaries run one after another (the reconnect test restarts the shared DC); the tests
# inside one binary run in parallel.
cargo test --workspace "$@"

# The infrastructure template: cfn-lint, checkov and the consistency checks they miss (pytest).
bash tests/infra/check.sh

#!/usr/bin/env bash
# The benchmark (issue 7): every figure beside a baseline measured in the same run. Makes sure
# the shared Samba DC runs and ldapadd is installed, builds shadowsync and the bench in release
# mode, and runs it; arguments go to the bench (see `tests/bench.sh --help`):
#
#   tests/bench.sh                       # every section at default sizes; writes BENCHMARKS.md
#   tests/bench.sh --guests 1000         # bulk sync of 1,000 then 4,000 guests
#   tests/bench.sh --only webhook,e2e    # some sections; prints only (add --out FILE to write)
#   tests/bench.sh --smoke               # tiny sizes, prints only (CI runs this)
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/samba/samba-dc.sh ensure >/dev/null
if ! command -v ldapadd >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ldap-utils
fi

if [[ " $* " == *" --smoke "* ]]; then
  # The smoke run (CI) checks that every section still works, not how fast: debug builds, whose
  # dependencies the test suite has compiled already.
  cargo build -q -p shadowsync -p shadowsync-bench -p shadowsync-webhook -p shadowsync-provisioner \
    -p shadowsync-subscriptions -p shadowsync-reconciler
  exec target/debug/shadowsync-bench "$@"
fi
# The Lambda artefacts as they deploy (cargo-lambda, release), and the bare function beside them.
tests/lambda/build.sh --x86-64 --bin shadowsync-lambda-baseline >/dev/null
cargo build --release -q -p shadowsync -p shadowsync-bench
exec target/release/shadowsync-bench "$@"

#!/usr/bin/env bash
# The whole test suite: starts what the tests need (a throwaway Samba AD DC, installed if
# missing, and moto server), then runs every test of the workspace (the Graph simulator starts
# inside the tests), then checks the infrastructure template. On every exit it stops what it
# started: both servers run detached (setsid) and would outlive it.
set -euo pipefail
cd "$(dirname "$0")/.."

# A DC that ran before (a developer's) is left running; `status` exits 1 only when none runs.
samba_status=0
bash tests/samba/samba-dc.sh status >/dev/null 2>&1 || samba_status=$?
samba_was_running=true
[[ $samba_status -ne 1 ]] || samba_was_running=false
# An endpoint given by the caller is the caller's: then no moto is started here, nor stopped.
own_moto=true
[[ -z "${SHADOWSYNC_TEST_AWS_ENDPOINT:-}" ]] || own_moto=false

cleanup() {
  local rc=$? failed=0
  trap - EXIT INT TERM HUP
  if $own_moto; then bash tests/moto/moto.sh stop || failed=1; fi
  if ! $samba_was_running; then bash tests/samba/samba-dc.sh stop || failed=1; fi
  # A server left behind fails a run that passed.
  if ((rc == 0 && failed)); then rc=1; fi
  exit "$rc"
}
trap cleanup EXIT
# A signal ends the script through `exit`, so that the EXIT trap runs.
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

bash tests/samba/samba-dc.sh ensure >/dev/null
# The chaos suite jumps serve's clock with libfaketime.
bash tests/faketime.sh ensure
if $own_moto; then
  # Started once here rather than by the first AWS test, so that this script knows to stop it.
  endpoint="$(bash tests/moto/moto.sh ensure)"
  export SHADOWSYNC_TEST_AWS_ENDPOINT="${endpoint#SHADOWSYNC_TEST_AWS_ENDPOINT=}"
fi

# Test binaries run one after another (the reconnect test restarts the shared DC); the tests
# inside one binary run in parallel.
cargo test --workspace "$@"

# The infrastructure template: cfn-lint, checkov and the consistency checks they miss (pytest).
bash tests/infra/check.sh

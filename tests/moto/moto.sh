#!/usr/bin/env bash
# moto.sh: a local moto server (SQS, DynamoDB and Secrets Manager) for the AWS tests.
# It runs moto_server through server.py beside this file, which makes SQS FIFO deduplication
# behave like AWS (see there).
#
#   moto.sh install|start|stop|status|reset|env|ensure
#
# moto is installed into a Python venv at $MOTO_VENV (default <repo>/target/moto-venv, override
# with SHADOWSYNC_MOTO_VENV); the server listens on 127.0.0.1:$SHADOWSYNC_MOTO_PORT (default
# 5000). Runtime files (pid file, log) live in $MOTO_DIR (default <repo>/target/moto, override
# with SHADOWSYNC_MOTO_DIR). Test harnesses call `ensure`: idempotent, safe to run concurrently,
# prints `SHADOWSYNC_TEST_AWS_ENDPOINT=http://127.0.0.1:PORT` on stdout. Progress goes to stderr.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
MOTO_VENV="${SHADOWSYNC_MOTO_VENV:-$REPO_ROOT/target/moto-venv}"
MOTO_DIR="${SHADOWSYNC_MOTO_DIR:-$REPO_ROOT/target/moto}"
PORT="${SHADOWSYNC_MOTO_PORT:-5000}"
HOST="127.0.0.1"
ENDPOINT="http://$HOST:$PORT"
START_TIMEOUT="${SHADOWSYNC_MOTO_START_TIMEOUT:-30}"

# moto's `server` extra brings flask and flask-cors; sqs needs no extra deps, dynamodb brings
# docker (unused here) and py-partiql-parser. Pinned to a major version so a new moto cannot
# change the tests' ground truth unnoticed.
PIP_SPEC=('moto[server,sqs,dynamodb]>=5,<6')
# Written after a successful install: `install` is a no-op (fast) while it matches PIP_SPEC.
INSTALLED_MARKER="$MOTO_VENV/.shadowsync-installed"

PID_FILE="$MOTO_DIR/moto-$PORT.pid"
LOG_FILE="$MOTO_DIR/moto-$PORT.log"
LOCK_FILE="$MOTO_DIR/moto.lock"

log() { printf 'moto: %s\n' "$*" >&2; }
die() { printf 'moto: error: %s\n' "$*" >&2; exit 1; }

now_ms() { date +%s%3N; }
since() { local t0=$1; local t1; t1=$(now_ms); printf '%d.%03d s' $(((t1 - t0) / 1000)) $(((t1 - t0) % 1000)); }

# ---------------------------------------------------------------------------------------------
# install

is_installed() {
  [[ -x "$MOTO_VENV/bin/moto_server" && -f "$INSTALLED_MARKER" ]] \
    && [[ "$(cat "$INSTALLED_MARKER")" == "${PIP_SPEC[*]}" ]]
}

cmd_install() {
  is_installed && return 0
  command -v python3 >/dev/null 2>&1 || die "python3 is missing (apt-get install python3 python3-venv)"
  local t0; t0=$(now_ms)
  log "installing ${PIP_SPEC[*]} into $MOTO_VENV"
  mkdir -p "$(dirname "$MOTO_VENV")"
  if [[ ! -x "$MOTO_VENV/bin/python" ]]; then
    python3 -m venv "$MOTO_VENV" >&2 \
      || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
  fi
  "$MOTO_VENV/bin/pip" install -q --disable-pip-version-check "${PIP_SPEC[@]}" >&2
  [[ -x "$MOTO_VENV/bin/moto_server" ]] || die "moto_server missing after pip install"
  printf '%s\n' "${PIP_SPEC[*]}" >"$INSTALLED_MARKER"
  log "installed in $(since "$t0")"
}

# ---------------------------------------------------------------------------------------------
# start / stop / status

# Alive and not a zombie (PID 1 may reap orphans late, and a zombie still answers `kill -0`).
proc_alive() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [[ "${stat%% *}" != Z && "${stat%% *}" != X ]]
}

# The pid of our moto server if it runs, else fail. The command line is checked too: a pid
# reused by another process (after a reboot) must not count as ours.
running_pid() {
  local pid
  [[ -f "$PID_FILE" ]] || return 1
  read -r pid <"$PID_FILE" 2>/dev/null || true
  [[ "${pid:-}" =~ ^[0-9]+$ ]] || return 1
  proc_alive "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "server.py -H $HOST -p $PORT" || return 1
  printf '%s\n' "$pid"
}

is_running() { running_pid >/dev/null; }

# moto's own API answers once the server serves requests.
probe() {
  curl -fsS -m 2 -o /dev/null "$ENDPOINT/moto-api/data.json" 2>/dev/null
}

port_taken() { (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; }

cmd_start() {
  is_installed || die "moto is not installed: run '$0 install' (or 'ensure')"
  mkdir -p "$MOTO_DIR"
  local i
  if is_running; then
    for ((i = 0; i < START_TIMEOUT * 10; i++)); do
      probe && return 0
      is_running || break
      sleep 0.1
    done
    is_running || die "moto (pid file $PID_FILE) exited; see $LOG_FILE"
    die "moto (pid $(running_pid)) runs but does not answer on $ENDPOINT; try '$0 stop'"
  fi
  if port_taken; then
    die "$HOST:$PORT is taken by another process; stop it or set SHADOWSYNC_MOTO_PORT"
  fi
  local t0; t0=$(now_ms)
  rm -f "$PID_FILE"
  printf '\n===== %s moto start =====\n' "$(date -Is)" >>"$LOG_FILE"
  # setsid: the server outlives the test process and its process group. Inherited descriptors
  # (the caller's pipes, our lock) are closed so that nobody waiting for EOF waits for moto.
  (
    for fd in /proc/"$BASHPID"/fd/*; do
      fd=${fd##*/}
      if ((fd > 2)); then eval "exec $fd>&-"; fi
    done
    exec setsid "$MOTO_VENV/bin/python" "$SCRIPT_DIR/server.py" -H "$HOST" -p "$PORT"
  ) </dev/null >>"$LOG_FILE" 2>&1 &
  local pid=$!
  printf '%s\n' "$pid" >"$PID_FILE"
  for ((i = 0; i < START_TIMEOUT * 10; i++)); do
    if probe; then
      log "moto (pid $pid) ready on $ENDPOINT in $(since "$t0")"
      return 0
    fi
    proc_alive "$pid" || { tail -n 20 "$LOG_FILE" >&2; die "moto exited at start; see $LOG_FILE"; }
    sleep 0.1
  done
  die "moto (pid $pid) did not answer on $ENDPOINT within ${START_TIMEOUT} s; see $LOG_FILE"
}

cmd_stop() {
  local pid i
  pid="$(running_pid)" || { rm -f "$PID_FILE"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 40; i++)); do
    proc_alive "$pid" || { rm -f "$PID_FILE"; log "stopped moto (pid $pid)"; return 0; }
    sleep 0.1
  done
  log "moto (pid $pid) ignored SIGTERM for 4 s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$PID_FILE"
}

cmd_status() {
  if is_running && probe; then
    log "moto (pid $(running_pid)) answers on $ENDPOINT"
    return 0
  fi
  log "moto is not running on $ENDPOINT"
  return 1
}

# Wipes every queue and table of this server (all tests sharing it!).
cmd_reset() {
  curl -fsS -m 10 -X POST -o /dev/null "$ENDPOINT/moto-api/reset" \
    || die "reset failed: is moto running on $ENDPOINT?"
  log "reset $ENDPOINT"
}

cmd_env() { printf 'SHADOWSYNC_TEST_AWS_ENDPOINT=%s\n' "$ENDPOINT"; }

cmd_ensure() {
  if ! { is_installed && is_running && probe; }; then
    with_lock ensure_locked
  fi
  cmd_env
}

ensure_locked() {
  # Re-check under the lock: another process may have done the work while we waited.
  cmd_install
  cmd_start
}

# Serialise install and start across processes (several test binaries call `ensure` at once).
with_lock() {
  mkdir -p "$MOTO_DIR"
  exec 9>>"$LOCK_FILE"
  flock -w 300 9 || die "timed out waiting for $LOCK_FILE"
  "$@"
  flock -u 9
  exec 9>&-
}

usage() {
  cat >&2 <<EOF
usage: $0 COMMAND
  install   create the venv and pip install ${PIP_SPEC[*]} (no-op when done)
  start     start moto_server on $ENDPOINT and wait until it answers
  stop      stop it
  status    exit 0 if it runs and answers
  reset     POST /moto-api/reset: wipe all queues and tables
  env       print SHADOWSYNC_TEST_AWS_ENDPOINT=...
  ensure    install and start as needed, then print env
MOTO_VENV=$MOTO_VENV (SHADOWSYNC_MOTO_VENV), port $PORT (SHADOWSYNC_MOTO_PORT)
EOF
}

case "${1:-}" in
  install) with_lock cmd_install ;;
  start) with_lock cmd_start ;;
  stop) with_lock cmd_stop ;;
  status) cmd_status ;;
  reset) cmd_reset ;;
  env) cmd_env ;;
  ensure) cmd_ensure ;;
  -h | --help | help) usage ;;
  *) usage; exit 2 ;;
esac

#!/usr/bin/env bash
# samba-dc.sh: a throwaway Samba AD domain controller for shadowsync's integration tests.
#
#   samba-dc.sh install|provision|start|stop|reset|status|env [--shell]|ensure [--shell]
#
# Everything lives in $SAMBA_DIR (default <repo>/target/samba-dc, override with
# SHADOWSYNC_SAMBA_DIR); /etc/samba is never touched. Test harnesses call `ensure`, which is
# idempotent, safe to run concurrently, and prints the KEY=VALUE lines of `env` on stdout.
# All progress messages go to stderr. See README.md beside this file.
set -euo pipefail

# samba lives in /usr/sbin, which a non-login PATH may lack.
PATH="$PATH:/usr/sbin:/sbin"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
SAMBA_DIR="${SHADOWSYNC_SAMBA_DIR:-$REPO_ROOT/target/samba-dc}"
case "$SAMBA_DIR" in
  /*) ;;
  *) SAMBA_DIR="$PWD/$SAMBA_DIR" ;;
esac
SAMBA_DIR="${SAMBA_DIR%/}"

# The domain.
REALM="CORP.EXAMPLE.TEST"
DOMAIN="CORP"
HOST="dc1"
FQDN="dc1.corp.example.test"
BASE_DN="DC=corp,DC=example,DC=test"
ADMIN_DN="CN=Administrator,CN=Users,$BASE_DN"
# Throwaway DC on loopback only: a fixed password keeps runs reproducible.
ADMIN_PASSWORD="Shadow-Sync-Test-2026!"
# OUs the tests manage, created under BASE_DN at provision time; add more here.
MANAGED_OUS=("Guests" "Disabled Guests")
GUESTS_OU="OU=Guests,$BASE_DN"
DISABLED_OU="OU=Disabled Guests,$BASE_DN"

LISTEN_IP="127.0.0.1"
LDAPS_URL="ldaps://$LISTEN_IP:636"
LDAP_URL="ldap://$LISTEN_IP:389"
PORTS=(88 389 636)
START_TIMEOUT="${SHADOWSYNC_SAMBA_START_TIMEOUT:-30}"

PACKAGES=(samba samba-ad-dc krb5-user winbind ldb-tools smbclient ldap-utils)

# Layout of $SAMBA_DIR.
SMB_CONF="$SAMBA_DIR/etc/smb.conf"
TLS_DIR="$SAMBA_DIR/tls"
CA_FILE="$TLS_DIR/ca.pem"
PID_FILE="$SAMBA_DIR/samba-dc.pid"
LOG_FILE="$SAMBA_DIR/samba.log"
PRISTINE_DIR="$SAMBA_DIR/pristine"
# Written last by `provision`: without it the directory is treated as unprovisioned.
MARKER="$SAMBA_DIR/.provisioned"
OWNED="$SAMBA_DIR/.samba-dc-dir"
# Directories of a provisioned DC that `reset` restores from the pristine copy.
STATE_DIRS=(etc private state cache bind-dns tls)
LOCK_FILE="$(dirname "$SAMBA_DIR")/$(basename "$SAMBA_DIR").lock"

log() { printf 'samba-dc: %s\n' "$*" >&2; }
die() { printf 'samba-dc: error: %s\n' "$*" >&2; exit 1; }

now_ms() { date +%s%3N; }
since() { local t0=$1; local t1; t1=$(now_ms); printf '%d.%03d s' $(((t1 - t0) / 1000)) $(((t1 - t0) % 1000)); }

need_root() {
  [[ $EUID -eq 0 ]] || die "'$1' needs root (Samba binds ports 88, 389 and 636)"
}

# ---------------------------------------------------------------------------------------------
# install

missing_tools() {
  local t
  for t in samba samba-tool ldapsearch ldbadd openssl; do
    command -v "$t" >/dev/null 2>&1 || printf '%s\n' "$t"
  done
}

cmd_install() {
  local missing
  missing="$(missing_tools)"
  if [[ -z "$missing" ]]; then
    return 0
  fi
  local packages=("${PACKAGES[@]}")
  command -v openssl >/dev/null 2>&1 || packages+=(openssl)
  log "installing ${packages[*]} (missing: $(echo "$missing" | tr '\n' ' '))"
  local sudo=()
  if [[ $EUID -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || die "not root and no sudo: cannot install ${packages[*]}"
    sudo=(sudo)
  fi
  local t0; t0=$(now_ms)
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    "${packages[@]}" >&2
  missing="$(missing_tools)"
  [[ -z "$missing" ]] || die "still missing after install: $(echo "$missing" | tr '\n' ' ')"
  log "installed in $(since "$t0")"
}

# ---------------------------------------------------------------------------------------------
# provision

make_certs() {
  local dir=$1
  mkdir -p "$dir"
  (
    umask 077
    cd "$dir"
    openssl req -x509 -new -newkey rsa:2048 -nodes -sha256 -days 3650 \
      -keyout ca.key -out ca.pem -subj "/O=shadowsync tests/CN=shadowsync test CA" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -addext "subjectKeyIdentifier=hash" 2>/dev/null
    openssl req -new -newkey rsa:2048 -nodes -sha256 \
      -keyout key.pem -out server.csr -subj "/O=shadowsync tests/CN=$FQDN" 2>/dev/null
    cat > server.ext <<EOF
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:$FQDN,DNS:localhost,IP:$LISTEN_IP
EOF
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -sha256 \
      -days 3650 -extfile server.ext -out cert.pem 2>/dev/null
    rm -f server.csr server.ext ca.srl
    # Samba refuses a key file that others can read; the certificates are public.
    chmod 600 key.pem ca.key
    chmod 644 ca.pem cert.pem
  )
  openssl verify -CAfile "$dir/ca.pem" "$dir/cert.pem" >/dev/null \
    || die "generated server certificate does not verify against its CA"
}

# What the marker says: a directory provisioned before the schema extension lacks it, and is
# provisioned again.
MARKER_TEXT="schema: Windows Server 2012 R2 + msDS-ExternalDirectoryObjectId"
is_provisioned() {
  [[ -f "$MARKER" && -f "$SMB_CONF" && -d "$PRISTINE_DIR" ]] \
    && [[ "$(cat "$MARKER")" == "$MARKER_TEXT" ]]
}

# Windows Server 2016's msDS-ExternalDirectoryObjectId (indexed: searchFlags 9), which
# shadowsync uses as its indexed anchor where the schema has it. Samba 4.17 provisions the 2012 R2
# schema (objectVersion 69) and cannot upgrade past it, but ships the 2016 definitions: the
# attribute's entry is taken from them as it is (CRLF line ends, `changetype` and
# `objectCategory` stripped: the offline add fills the category in) and, as in Windows, the
# `mailRecipient` auxiliary class of `user` may contain it. Written into the stopped DC's database
# with schema updates allowed for this one command.
extend_schema() {
  local definitions=/usr/share/samba/setup/ad-schema/AD_DS_Attributes__Windows_Server_2016.ldf
  [[ -f "$definitions" ]] || die "Samba's Windows Server 2016 schema definitions are missing: $definitions"
  local entry
  entry="$(tr -d '\r' <"$definitions" \
    | awk 'BEGIN { RS = ""; ORS = "\n\n" } /^dn: CN=ms-DS-External-Directory-Object-Id,/' \
    | grep -v '^changetype:\|^objectCategory:' | sed "s/DC=X\$/$BASE_DN/")"
  [[ "$entry" == *"lDAPDisplayName: msDS-ExternalDirectoryObjectId"* ]] \
    || die "msDS-ExternalDirectoryObjectId not found in $definitions"
  local schema_update=(--option="dsdb:schema update allowed = true")
  printf '%s\n' "$entry" | ldbadd -H "$SAMBA_DIR/private/sam.ldb" "${schema_update[@]}" >/dev/null \
    || die "adding msDS-ExternalDirectoryObjectId to the schema failed"
  printf 'dn: CN=Mail-Recipient,CN=Schema,CN=Configuration,%s\nchangetype: modify\nadd: mayContain\nmayContain: msDS-ExternalDirectoryObjectId\n' \
    "$BASE_DN" | ldbmodify -H "$SAMBA_DIR/private/sam.ldb" "${schema_update[@]}" >/dev/null \
    || die "allowing msDS-ExternalDirectoryObjectId on users failed"
}

cmd_provision() {
  need_root provision
  [[ -z "$(missing_tools)" ]] || die "Samba tools missing: run '$0 install' first"
  if is_running; then
    die "the DC in $SAMBA_DIR is running: stop it before provisioning again"
  fi
  local t0; t0=$(now_ms)
  log "provisioning $REALM into $SAMBA_DIR"
  # Wipe whatever a previous (possibly interrupted) provision left behind, but only a
  # directory this script made (it holds OWNED): SHADOWSYNC_SAMBA_DIR could point anywhere.
  if [[ -d "$SAMBA_DIR" && ! -f "$OWNED" ]] && [[ -n "$(ls -A "$SAMBA_DIR")" ]]; then
    die "$SAMBA_DIR exists, is not empty and was not made by this script: refusing to wipe it"
  fi
  rm -rf "$SAMBA_DIR"
  mkdir -p "$SAMBA_DIR/run"
  touch "$OWNED"

  make_certs "$TLS_DIR"

  # Provision would write a default smb.conf into /etc/samba if it could not create one in the
  # target directory; --targetdir keeps every path (etc, private, state, cache) inside it.
  samba-tool domain provision \
    --realm="$REALM" --domain="$DOMAIN" --server-role=dc --dns-backend=NONE \
    --adminpass="$ADMIN_PASSWORD" --targetdir="$SAMBA_DIR" --host-name="$HOST" \
    --option="interfaces = $LISTEN_IP" \
    --option="bind interfaces only = yes" \
    --option="server services = ldap kdc" \
    --option="pid directory = $SAMBA_DIR/run" \
    --option="ncalrpc dir = $SAMBA_DIR/run/ncalrpc" \
    --option="log file = $SAMBA_DIR/log.%m" \
    --option="tls enabled = yes" \
    --option="tls keyfile = $TLS_DIR/key.pem" \
    --option="tls certfile = $TLS_DIR/cert.pem" \
    --option="tls cafile = $TLS_DIR/ca.pem" \
    >"$SAMBA_DIR/provision.log" 2>&1 \
    || { tail -n 30 "$SAMBA_DIR/provision.log" >&2; die "samba-tool domain provision failed (log: $SAMBA_DIR/provision.log)"; }

  # Each option above must have reached smb.conf (provision silently drops some options).
  local opt
  for opt in "log file" "tls certfile" "tls keyfile" "tls cafile" "server services" "interfaces" "pid directory"; do
    grep -qi "^[[:space:]]*${opt}[[:space:]]*=" "$SMB_CONF" || die "'$opt' missing from $SMB_CONF"
  done

  # The OUs shadowsync manages, written straight into the stopped DC's database.
  local ldif="" ou
  for ou in "${MANAGED_OUS[@]}"; do
    ldif+="dn: OU=$ou,$BASE_DN"$'\n'"objectClass: organizationalUnit"$'\n'"ou: $ou"$'\n'$'\n'
  done
  printf '%s' "$ldif" | ldbadd -H "$SAMBA_DIR/private/sam.ldb" >/dev/null \
    || die "creating the managed OUs failed"
  # Provision leaves Administrator at userAccountControl 512, so its password would expire
  # after the domain's 42-day maxPwdAge and a long-kept $SAMBA_DIR would stop binding (49,
  # data 532). Mark it DONT_EXPIRE_PASSWORD (0x10000); the domain policy itself stays default.
  printf 'dn: %s\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 66048\n' \
    "$ADMIN_DN" | ldbmodify -H "$SAMBA_DIR/private/sam.ldb" >/dev/null \
    || die "setting Administrator's password to never expire failed"
  extend_schema

  # Keep a pristine copy of the stopped DC for `reset`. It comes back to the same absolute
  # path, so the absolute paths in smb.conf stay right.
  rm -rf "$PRISTINE_DIR"
  mkdir -p "$PRISTINE_DIR"
  local d
  for d in "${STATE_DIRS[@]}"; do
    if [[ -e "$SAMBA_DIR/$d" ]]; then
      cp -a "$SAMBA_DIR/$d" "$PRISTINE_DIR/$d"
    fi
  done
  printf '%s' "$MARKER_TEXT" >"$MARKER"
  log "provisioned in $(since "$t0")"
}

# ---------------------------------------------------------------------------------------------
# start / stop / status

# "STATE STARTTIME" of a process (starttime in clock ticks since boot tells a reused pid apart);
# fails if there is no such process.
proc_info() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"   # drop "pid (comm) ", comm may hold spaces
  # shellcheck disable=SC2086
  set -- $stat
  printf '%s %s\n' "$1" "${20}"
}

proc_start() { local info; info="$(proc_info "$1")" || return 1; printf '%s\n' "${info#* }"; }

# Alive and not a zombie: here PID 1 reaps orphans only after a second or two, and a zombie
# still answers `kill -0`.
proc_alive() {
  local info
  info="$(proc_info "$1")" || return 1
  [[ "${info%% *}" != Z && "${info%% *}" != X ]] || return 1
  [[ -z "${2:-}" || "${info#* }" == "$2" ]]
}

# The pid of our samba if it runs, else fail. Samba rewrites its command line ("samba: root
# process"), so the pid file holds "PID STARTTIME" and both must still match.
running_pid() {
  local pid start
  [[ -f "$PID_FILE" ]] || return 1
  read -r pid start <"$PID_FILE" 2>/dev/null || true
  [[ "${pid:-}" =~ ^[0-9]+$ && -n "${start:-}" ]] || return 1
  proc_alive "$pid" "$start" || return 1
  printf '%s\n' "$pid"
}

is_running() { running_pid >/dev/null; }

# An anonymous rootDSE search over LDAPS, verifying the server certificate against our CA.
ldaps_probe() {
  LDAPTLS_CACERT="$CA_FILE" LDAPTLS_REQCERT=demand \
    ldapsearch -LLL -x -H "$LDAPS_URL" -o nettimeout=2 -l 2 -b '' -s base dnsHostName \
    >/dev/null 2>&1
}

# What else listens on our ports (one line per socket), empty when the ports are free.
foreign_listeners() {
  local p lines=""
  if command -v ss >/dev/null 2>&1; then
    for p in "${PORTS[@]}"; do
      lines+="$(ss -Hltnp "sport = :$p" 2>/dev/null || true)"$'\n'
    done
    printf '%s' "$lines" | grep -v '^$' || true
  else
    for p in "${PORTS[@]}"; do
      if (exec 3<>"/dev/tcp/$LISTEN_IP/$p") 2>/dev/null; then
        printf 'something listens on %s:%s\n' "$LISTEN_IP" "$p"
      fi
    done
  fi
}

describe_listeners() {
  local lines=$1 pid cmd dir
  printf '%s\n' "$lines" >&2
  for pid in $(printf '%s\n' "$lines" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do
    cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | sed 's/ *$//' || true)"
    # Samba hides its arguments; its open sam.ldb tells which directory it serves.
    dir="$(find "/proc/$pid/fd" -maxdepth 1 -lname '*/private/sam.ldb' -printf '%l\n' 2>/dev/null \
      | head -n 1 || true)"
    if [[ -n "$dir" ]]; then
      dir="${dir%/private/sam.ldb}"
      printf '  pid %s: %s, serving %s\n' "$pid" "${cmd:-?}" "$dir" >&2
      if [[ -f "$dir/samba-dc.pid" ]]; then
        printf '  (stop it with: SHADOWSYNC_SAMBA_DIR=%q %q stop)\n' "$dir" "$0" >&2
      fi
    else
      printf '  pid %s: %s\n' "$pid" "${cmd:-?}" >&2
    fi
  done
}

cmd_start() {
  need_root start
  is_provisioned || die "$SAMBA_DIR is not provisioned: run '$0 provision' (or 'ensure')"
  if is_running; then
    # Ours already runs: give a busy (or still starting) DC the usual time to answer.
    local i
    for ((i = 0; i < START_TIMEOUT * 10; i++)); do
      ldaps_probe && return 0
      is_running || break
      sleep 0.1
    done
    is_running || die "samba (pid file $PID_FILE) exited; see $LOG_FILE"
    die "samba (pid $(running_pid)) runs but does not answer on $LDAPS_URL; try '$0 stop'"
  fi
  local others
  others="$(foreign_listeners)"
  if [[ -n "$others" ]]; then
    log "ports ${PORTS[*]} on $LISTEN_IP are taken by another process:"
    describe_listeners "$others"
    die "another LDAP/Kerberos server (another Samba DC?) already listens; stop it first (only one DC can use $LISTEN_IP:389/636/88)"
  fi

  local t0; t0=$(now_ms)
  mkdir -p "$SAMBA_DIR/run"
  rm -f "$PID_FILE"
  printf '\n===== %s samba start =====\n' "$(date -Is)" >>"$LOG_FILE"
  local log_from
  log_from=$(($(wc -l <"$LOG_FILE") + 1))
  # setsid: the DC outlives the test process and its process group. Every inherited descriptor
  # (the caller's pipes, our lock, a jobserver's) is closed so that nobody waiting for EOF on
  # one of them waits for the DC; stdout and stderr go to the log.
  (
    for fd in /proc/"$BASHPID"/fd/*; do
      fd=${fd##*/}
      if ((fd > 2)); then eval "exec $fd>&-"; fi
    done
    exec setsid samba -s "$SMB_CONF" -F -M single --no-process-group --debug-stdout -d1
  ) </dev/null >>"$LOG_FILE" 2>&1 &
  local pid=$!
  echo "$pid $(proc_start "$pid")" >"$PID_FILE"

  local deadline=$((t0 + START_TIMEOUT * 1000))
  while :; do
    if ! proc_alive "$pid"; then
      rm -f "$PID_FILE"
      log "samba exited during startup; its output ($LOG_FILE):"
      tail -n "+$log_from" "$LOG_FILE" | tail -n 40 >&2
      die "samba failed to start"
    fi
    if ldaps_probe; then
      break
    fi
    if (($(now_ms) > deadline)); then
      log "no CA-verified answer on $LDAPS_URL after ${START_TIMEOUT} s; samba's output ($LOG_FILE):"
      tail -n "+$log_from" "$LOG_FILE" | tail -n 40 >&2
      log "the probe said:"
      LDAPTLS_CACERT="$CA_FILE" LDAPTLS_REQCERT=demand \
        ldapsearch -LLL -x -H "$LDAPS_URL" -o nettimeout=2 -l 2 -b '' -s base dnsHostName 2>&1 \
        | sed 's/^/  /' >&2 || true
      log "TLS handshake check (openssl s_client against $CA_FILE):"
      timeout 5 openssl s_client -connect "$LISTEN_IP:636" -CAfile "$CA_FILE" -verify_return_error \
        </dev/null 2>&1 | grep -iE 'verify|error|connect' | head -n 5 | sed 's/^/  /' >&2 || true
      stop_pid "$pid"
      rm -f "$PID_FILE"
      die "samba did not become ready within ${START_TIMEOUT} s"
    fi
    sleep 0.05
  done
  log "started (pid $pid) in $(since "$t0")"
}

# stop_pid PID [SIGNAL]: signal the DC (TERM by default) and wait until it is gone.
stop_pid() {
  local pid=$1 sig=${2:-TERM} i
  kill "-$sig" "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 200; i++)); do   # 4 s
    proc_alive "$pid" || return 0
    sleep 0.02
  done
  log "samba (pid $pid) ignored SIG$sig for 4 s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 250; i++)); do
    proc_alive "$pid" || return 0
    sleep 0.02
  done
  die "could not stop samba (pid $pid)"
}

# cmd_stop SIGNAL: TERM, escalating to KILL after 4 s.
cmd_stop() {
  local pid t0
  t0=$(now_ms)
  if pid="$(running_pid)"; then
    stop_pid "$pid" "${1:-TERM}"
    log "stopped (pid $pid) in $(since "$t0")"
  fi
  rm -f "$PID_FILE"
}

cmd_status() {
  local pid
  if ! pid="$(running_pid)"; then
    echo "not running ($SAMBA_DIR)"
    return 1
  fi
  if ! ldaps_probe; then
    echo "running (pid $pid) but not answering on $LDAPS_URL"
    return 2
  fi
  echo "running (pid $pid), answering on $LDAPS_URL ($SAMBA_DIR)"
}

# ---------------------------------------------------------------------------------------------
# reset

cmd_reset() {
  need_root reset
  is_provisioned || die "$SAMBA_DIR is not provisioned: nothing to reset to"
  local t0; t0=$(now_ms)
  cmd_stop TERM
  # Never swap the database under a live server (say, one whose pid file was lost).
  local others
  others="$(foreign_listeners)"
  if [[ -n "$others" ]]; then
    log "ports ${PORTS[*]} on $LISTEN_IP are still taken after stopping:"
    describe_listeners "$others"
    die "refusing to reset while another LDAP/Kerberos server listens; stop it first"
  fi
  local d
  for d in "${STATE_DIRS[@]}"; do
    rm -rf "${SAMBA_DIR:?}/$d"
    if [[ -e "$PRISTINE_DIR/$d" ]]; then
      cp -a "$PRISTINE_DIR/$d" "$SAMBA_DIR/$d"
    fi
  done
  rm -rf "${SAMBA_DIR:?}/run"
  cmd_start
  log "reset in $(since "$t0")"
}

# ---------------------------------------------------------------------------------------------
# env / ensure

cmd_env() {
  local shell=${1:-}
  local -a kv=(
    "SHADOWSYNC_TEST_LDAP_URL=$LDAPS_URL"
    "SHADOWSYNC_TEST_LDAP_STARTTLS_URL=$LDAP_URL"
    "SHADOWSYNC_TEST_BIND_DN=$ADMIN_DN"
    "SHADOWSYNC_TEST_BIND_PASSWORD=$ADMIN_PASSWORD"
    "SHADOWSYNC_TEST_CA_FILE=$CA_FILE"
    "SHADOWSYNC_TEST_BASE_DN=$BASE_DN"
    "SHADOWSYNC_TEST_GUESTS_OU=$GUESTS_OU"
    "SHADOWSYNC_TEST_DISABLED_OU=$DISABLED_OU"
    "SHADOWSYNC_TEST_SAMBA_DIR=$SAMBA_DIR"
  )
  local line
  for line in "${kv[@]}"; do
    if [[ "$shell" == "--shell" ]]; then
      printf 'export %s=%q\n' "${line%%=*}" "${line#*=}"
    else
      printf '%s\n' "$line"
    fi
  done
}

cmd_ensure() {
  if [[ -z "$(missing_tools)" ]] && is_provisioned && is_running && ldaps_probe; then
    return 0
  fi
  with_lock ensure_locked
}

ensure_locked() {
  # Re-check under the lock: another process may have done the work while we waited.
  cmd_install
  if ! is_provisioned; then
    # A DC provisioned by an earlier version of this script (without the schema extension).
    if is_running; then
      cmd_stop
    fi
    cmd_provision
  fi
  cmd_start
}

# Serialise everything that changes the DC across processes (several test binaries may call
# `ensure` at once). The lock file sits beside $SAMBA_DIR so that `provision` may wipe the dir.
with_lock() {
  mkdir -p "$(dirname "$LOCK_FILE")"
  exec 9>>"$LOCK_FILE"
  if ! flock -w 600 9; then
    die "timed out waiting for $LOCK_FILE"
  fi
  "$@"
  flock -u 9
  exec 9>&-
}

usage() {
  cat >&2 <<EOF
usage: $0 COMMAND
  install      install the Debian packages if samba-tool is missing (root or sudo)
  provision    provision a fresh DC into \$SAMBA_DIR and keep a pristine copy
  start        start the DC and wait for CA-verified LDAPS (timeout ${START_TIMEOUT} s)
  stop         stop the DC
  reset        stop, restore the pristine copy, start
  status       exit 0 if the DC runs and answers on LDAPS
  env [--shell]     print the KEY=VALUE lines the tests read (--shell: export lines)
  ensure [--shell]  install/provision/start as needed, then print env
SAMBA_DIR=$SAMBA_DIR (override with SHADOWSYNC_SAMBA_DIR)
EOF
}

main() {
  local cmd=${1:-}
  shift || true
  case "$cmd" in
    install) with_lock cmd_install ;;
    provision) with_lock cmd_provision ;;
    start) with_lock cmd_start ;;
    stop) with_lock cmd_stop TERM ;;
    reset) with_lock cmd_reset ;;
    status) cmd_status ;;
    env) cmd_env "${1:-}" ;;
    ensure)
      cmd_ensure
      cmd_env "${1:-}"
      ;;
    -h | --help | help) usage ;;
    *)
      usage
      exit 2
      ;;
  esac
}

main "$@"

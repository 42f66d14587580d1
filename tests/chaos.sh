#!/usr/bin/env bash
# The chaos suite (functions/cli/tests/chaos.rs) at the size asked for, one scenario at a time,
# then its table. Without flags: the reduced run the test suite makes. `--full`: the sizes
# README's table reports. Each flag sets one size:
#
#   --guests N          guests whose notifications are duplicated and shuffled (full: 100)
#   --notifications N   changes to them, each delivered three times (full: 1000)
#   --sync-guests N     guests of the initial sync serve is killed during (full: 500)
#   --kills N           kill -9 of serve during it (full: 20)
#   --dc-outage S       seconds the DC is unreachable (full: 600)
#   --graph-faults S    seconds Graph fails ~30% of reads (full: 300)
#   --seed N
#
# Starts the Samba DC if none runs (and stops it again), like tests/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

while (($#)); do
  case "$1" in
    --full)
      export SHADOWSYNC_CHAOS_GUESTS=100 SHADOWSYNC_CHAOS_NOTIFICATIONS=1000 \
        SHADOWSYNC_CHAOS_SYNC_GUESTS=500 SHADOWSYNC_CHAOS_KILLS=20 \
        SHADOWSYNC_CHAOS_DC_OUTAGE=600 SHADOWSYNC_CHAOS_GRAPH_FAULTS=300
      shift ;;
    --guests) export SHADOWSYNC_CHAOS_GUESTS="$2"; shift 2 ;;
    --notifications) export SHADOWSYNC_CHAOS_NOTIFICATIONS="$2"; shift 2 ;;
    --sync-guests) export SHADOWSYNC_CHAOS_SYNC_GUESTS="$2"; shift 2 ;;
    --kills) export SHADOWSYNC_CHAOS_KILLS="$2"; shift 2 ;;
    --dc-outage) export SHADOWSYNC_CHAOS_DC_OUTAGE="$2"; shift 2 ;;
    --graph-faults) export SHADOWSYNC_CHAOS_GRAPH_FAULTS="$2"; shift 2 ;;
    --seed) export SHADOWSYNC_CHAOS_SEED="$2"; shift 2 ;;
    *) echo "unknown flag $1 (see the head of $0)" >&2; exit 2 ;;
  esac
done

samba_status=0
bash tests/samba/samba-dc.sh status >/dev/null 2>&1 || samba_status=$?
if ((samba_status == 1)); then trap 'bash tests/samba/samba-dc.sh stop' EXIT; fi
bash tests/samba/samba-dc.sh ensure >/dev/null
bash tests/faketime.sh ensure

out="$(mktemp)"
rc=0
# One scenario at a time: each starts its own serve against the one DC, and a figure measured
# beside another scenario would measure both.
cargo test -p shadowsync --test chaos -- --test-threads=1 --nocapture 2>&1 | tee "$out" || rc=$?
echo
echo "| scenario | size | figures |"
echo "|---|---|---|"
grep -o '| [^|]* | [^|]* | .* |$' "$out" || true
rm -f "$out"
exit "$rc"

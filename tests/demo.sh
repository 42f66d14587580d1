#!/usr/bin/env bash
# The demo: installs what is missing (Samba, as root), builds, then shows guests invited through
# the Graph simulator becoming Active Directory accounts within moments. See README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/samba/samba-dc.sh install
echo "▸ Building shadowsync (the first build takes a few minutes)…"
cargo build -q -p shadowsync -p shadowsync-e2e --bins
exec target/debug/demo

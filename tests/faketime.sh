#!/usr/bin/env bash
# libfaketime, which the chaos suite preloads into `shadowsync serve` to jump its clock a year
# (Debian's `faketime` package). `faketime.sh ensure` installs it when missing.
set -euo pipefail
[[ "${1:-}" == ensure ]] || { echo "usage: $0 ensure" >&2; exit 2; }
if compgen -G "/usr/lib/*/faketime/libfaketime.so.1" >/dev/null \
  || [[ -e /usr/lib/faketime/libfaketime.so.1 ]]; then
  exit 0
fi
sudo=()
if [[ $EUID -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 || { echo "not root and no sudo: cannot install faketime" >&2; exit 1; }
  sudo=(sudo)
fi
echo "faketime: installing (apt)" >&2
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q faketime >&2

#!/usr/bin/env bash
# Builds the four Lambda artefacts with cargo-lambda, which links them with zig against a glibc
# old enough for Lambda's provided.al2023 runtime. They land in target/lambda/<binary>/bootstrap,
# where infra/template.yaml's CodeUri points.
#
#   tests/lambda/build.sh            x86_64 (what CI builds)
#   tests/lambda/build.sh --arm64    Graviton (deploy with Architecture=arm64)
#   tests/lambda/build.sh --x86-64 --bin NAME…   also other binaries (the benchmark's baseline)
#
# cargo-lambda and zig come from PyPI (`pip install cargo-lambda ziglang`) into a venv at
# $SHADOWSYNC_LAMBDA_VENV (default target/lambda-venv).
set -euo pipefail
cd "$(dirname "$0")/../.."

VENV="${SHADOWSYNC_LAMBDA_VENV:-target/lambda-venv}"
if [[ ! -x "$VENV/bin/cargo-lambda" ]]; then
  python3 -m venv "$VENV" 2>/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$VENV"
  }
  "$VENV/bin/pip" install -q --disable-pip-version-check cargo-lambda ziglang
fi
export PATH="$PWD/$VENV/bin:$PATH"

arch="${1:---x86-64}"
[[ "$arch" == "--x86-64" || "$arch" == "--arm64" ]] || { echo "usage: $0 [--x86-64|--arm64] [--bin NAME]…" >&2; exit 2; }
shift || true
[[ "$arch" == "--arm64" ]] && rustup target add aarch64-unknown-linux-gnu >/dev/null 2>&1 || true

cargo lambda build --release "$arch" \
  --bin shadowsync-webhook --bin shadowsync-provisioner \
  --bin shadowsync-subscriptions --bin shadowsync-reconciler "$@"

for f in webhook provisioner subscriptions reconciler; do
  artefact="target/lambda/shadowsync-$f/bootstrap"
  [[ -x "$artefact" ]] || { echo "missing $artefact" >&2; exit 1; }
  printf '%-28s %s bytes\n' "shadowsync-$f" "$(stat -c %s "$artefact")"
done

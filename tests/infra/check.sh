#!/usr/bin/env bash
# Offline checks of infra/template.yaml: cfn-lint, checkov, then the pytest checks cfn-lint misses.
#
#   tests/infra/check.sh            # creates/reuses <repo>/target/infra-venv
#   INFRA_VENV=/path tests/infra/check.sh
#   INFRA_TEMPLATE=/tmp/copy.yaml tests/infra/check.sh   # e.g. to see the checks fail
#
# Runs every step even when an earlier one fails, so one run shows all problems. The pytest run
# also reports the cfn-lint and checkov results as tests, so its summary (the last line printed)
# covers everything; the exit status is non-zero if any step failed.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${INFRA_VENV:-$REPO/target/infra-venv}"
TEMPLATE="${INFRA_TEMPLATE:-infra/template.yaml}"   # override to check a copy
export INFRA_TEMPLATE="$TEMPLATE"
RESULTS="$REPO/target/infra-check"
REQUIREMENTS="$REPO/tests/infra/requirements.txt"

cd "$REPO" || exit 2
export PYTHONDONTWRITEBYTECODE=1

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# --- venv -------------------------------------------------------------------------------------
stamp="$VENV/.shadowsync-requirements"
if [[ ! -x "$VENV/bin/python" ]] || ! cmp -s "$REQUIREMENTS" "$stamp"; then
    t0=$(now)
    echo "== creating $VENV (pip install -r tests/infra/requirements.txt)"
    python3 -m venv "$VENV" || exit 2
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQUIREMENTS" || {
        echo "pip install failed" >&2
        exit 2
    }
    cp "$REQUIREMENTS" "$stamp"
    echo "   pip install: $(elapsed "$t0") s"
else
    echo "== reusing $VENV"
fi
"$VENV/bin/cfn-lint" --version
echo "checkov $("$VENV/bin/checkov" --version)"

rm -rf "$RESULTS"
mkdir -p "$RESULTS"
failed=0

# --- cfn-lint ---------------------------------------------------------------------------------
t0=$(now)
echo "== cfn-lint $TEMPLATE"
"$VENV/bin/cfn-lint" "$TEMPLATE" >"$RESULTS/cfn-lint.out" 2>&1
rc=$?
echo "$rc" >"$RESULTS/cfn-lint.rc"
cat "$RESULTS/cfn-lint.out"
echo "   cfn-lint: exit $rc in $(elapsed "$t0") s"
[[ $rc -eq 0 ]] || failed=1

# --- checkov ----------------------------------------------------------------------------------
# --skip-download: no calls to Prisma Cloud for guidelines (offline). Waivers live in the
# template's resource Metadata (checkov: skip: - id, comment) and are listed below.
t0=$(now)
echo "== checkov -f $TEMPLATE --framework cloudformation"
"$VENV/bin/checkov" -f "$TEMPLATE" --framework cloudformation --skip-download --compact \
    -o cli -o json --output-file-path "console,$RESULTS/checkov.json" >"$RESULTS/checkov.out" 2>&1
rc=$?
echo "$rc" >"$RESULTS/checkov.rc"
# The full report (every passed check) stays in the file; show it only when something failed.
[[ $rc -eq 0 ]] || cat "$RESULTS/checkov.out"
"$VENV/bin/python" - "$RESULTS/checkov.json" <<'EOF'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception as e:  # the rc above already says what went wrong
    print(f"   (no JSON summary: {e})")
    sys.exit(0)
s = d.get("summary", {})
print(f"   checkov: {s.get('passed')} passed, {s.get('failed')} failed, {s.get('skipped')} waived")
for c in d.get("results", {}).get("failed_checks", []):
    print(f"   FAILED {c['check_id']} on {c['resource']}: {c.get('check_name')}")
for c in d.get("results", {}).get("skipped_checks", []):
    reason = " ".join(str(c.get("check_result", {}).get("suppress_comment", "")).split())
    print(f"   waived {c['check_id']} on {c['resource']}: {reason}")
EOF
echo "   checkov: exit $rc in $(elapsed "$t0") s"
[[ $rc -eq 0 ]] || failed=1

# --- pytest (last: its summary is the final line) ---------------------------------------------
echo "== pytest tests/infra"
SHADOWSYNC_INFRA_RESULTS="$RESULTS" "$VENV/bin/python" -m pytest tests/infra -rfEs
rc=$?
[[ $rc -eq 0 ]] || failed=1
exit $failed

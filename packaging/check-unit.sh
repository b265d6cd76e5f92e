#!/bin/bash
# Checks systemd/jenkins-spot-agent.service:
#  - `systemd-analyze verify` prints nothing (it exits 0 on unknown keys and typos,
#    so any output is a failure);
#  - `systemd-analyze security --offline=yes` scores no worse than the score recorded
#    in docs/benchmarks-unit.txt. After hardening the unit further, record the new
#    score with: packaging/check-unit.sh --record
#
# verify needs the ExecStart binary to exist, so the check runs a copy of the unit
# whose ExecStart points at dist/jenkins-spot-agent (or $JSA_BIN).
# Without systemd-analyze it skips, except under CI=true, where it fails.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

unit=systemd/jenkins-spot-agent.service
record=docs/benchmarks-unit.txt
bin=${JSA_BIN:-$top/dist/jenkins-spot-agent}

fail() { echo "check-unit: FAIL: $*" >&2; exit 1; }
if ! command -v systemd-analyze >/dev/null 2>&1; then
	if [ "${CI:-}" = true ]; then fail "systemd-analyze not installed (apt-get install systemd); CI=true requires it"; fi
	echo "check-unit: SKIP: systemd-analyze not installed (apt-get install systemd)" >&2
	exit 0
fi
[ -x "$bin" ] || fail "$bin is missing; run 'make build' (or set JSA_BIN to a built binary)"
grep -q '^ExecStart=/usr/bin/jenkins-spot-agent run --config /etc/jenkins-spot-agent/config.yaml$' "$unit" ||
	fail "$unit: ExecStart must be '/usr/bin/jenkins-spot-agent run --config /etc/jenkins-spot-agent/config.yaml'"

dir=$(mktemp -d "${TMPDIR:-/tmp}/jsa-unit.XXXXXX")
trap 'rm -rf "$dir"' EXIT
copy=$dir/jenkins-spot-agent.service
sed "s#^ExecStart=/usr/bin/jenkins-spot-agent #ExecStart=$bin #" "$unit" >"$copy"

out=$(systemd-analyze verify "$copy" 2>&1) || { echo "$out" >&2; fail "systemd-analyze verify failed"; }
if [ -n "$out" ]; then
	echo "$out" >&2
	fail "systemd-analyze verify printed warnings for $unit"
fi

report=$(systemd-analyze security --offline=yes "$copy" 2>&1) || true
score=$(sed -n 's/.*Overall exposure level for jenkins-spot-agent.service: \([0-9.]*\).*/\1/p' <<<"$report")
[ -n "$score" ] || { echo "$report" >&2; fail "no exposure score in systemd-analyze security output"; }

if [ "${1:-}" = --record ]; then
	{
		echo "# systemd-analyze security --offline=yes systemd/jenkins-spot-agent.service"
		echo "# ($(systemd-analyze --version | head -n 1)). packaging/check-unit.sh fails when the"
		echo "# exposure gets worse than the score below; lower is better (0 safest, 10 worst)."
		echo "# The agent runs as root with CAP_SYS_ADMIN and without any namespace option so"
		echo "# that its EFS mount is visible to the host and dockerd; see the unit's comments."
		echo "exposure: $score"
		echo
		grep -v '^$' <<<"$report" | sed 's/[[:space:]]*$//'
	} >"$record"
	echo "check-unit: recorded exposure $score in $record"
	exit 0
fi

recorded=$(sed -n 's/^exposure: *//p' "$record" 2>/dev/null || true)
[ -n "$recorded" ] || fail "$record has no 'exposure:' line; run packaging/check-unit.sh --record"
# --threshold takes tenths: 4.5 -> 45. It fails when the exposure is above it.
threshold=$(awk -v s="$recorded" 'BEGIN { printf "%d", s * 10 + 0.5 }')
if ! systemd-analyze security --offline=yes --threshold="$threshold" "$copy" >/dev/null 2>&1; then
	fail "exposure $score is worse than the recorded $recorded ($record); a hardening option was lost"
fi
echo "check-unit: ok: verify silent; exposure $score (recorded $recorded)"

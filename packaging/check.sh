#!/bin/bash
# Every packaging check, in order, with one PASS/FAIL/SKIP line each; exits non-zero
# if any failed. Needs dist/jenkins-spot-agent (make build).
#
#   packaging/check.sh [BINARY]   BINARY: the agent to check, default
#                                 dist/jenkins-spot-agent (the packages always take
#                                 that one). VERSION of the test packages: the newest
#                                 in packaging/changelog, or $JSA_VERSION
#
# Tools (Debian 12): systemd (systemd-analyze), cloud-init, lintian, dpkg,
# init-system-helpers, python3 with python3-yaml, and Go (nfpm runs with go run).
# cfn-lint (PyPI) is optional; see check-cfn.sh. Under CI=true a missing tool fails
# its check instead of skipping it.
set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1

bin=${1:-dist/jenkins-spot-agent}
export JSA_BIN
JSA_BIN=$(cd "$(dirname "$bin")" 2>/dev/null && pwd)/$(basename "$bin")
version=${JSA_VERSION:-$(sed -n '1s/^jenkins-spot-agent (\([^)-]*\)-[^)]*).*/\1/p' packaging/changelog)}
log=$(mktemp -d "${TMPDIR:-/tmp}/jsa-check.XXXXXX")
trap 'rm -rf "$log"' EXIT
failed=0

# run NAME COMMAND...: runs one check, prints its line, and its output when it failed.
run() {
	local name=$1 out=$log/$1.log rc
	shift
	"$@" >"$out" 2>&1
	rc=$?
	if [ $rc -ne 0 ]; then
		printf 'FAIL  %s\n' "$name"
		sed 's/^/      /' "$out"
		failed=$((failed + 1))
	elif grep -q 'SKIP:' "$out"; then
		printf 'SKIP  %s: %s\n' "$name" "$(grep -m1 'SKIP:' "$out" | sed 's/.*SKIP: //')"
	elif grep -q 'NOT LINTED' "$out"; then
		printf 'PASS  %s (partly: %s)\n' "$name" "$(grep -m1 'WARNING' "$out" | sed 's/.*WARNING: //')"
	else
		printf 'PASS  %s\n' "$name"
	fi
}

shell_syntax() {
	local f rc=0
	for f in packaging/*.sh packaging/scripts/deb/* packaging/scripts/rpm/*; do
		case "$f" in *.sh) bash -n "$f" ;; *) sh -n "$f" ;; esac || { echo "syntax error: $f"; rc=1; }
	done
	if command -v shellcheck >/dev/null 2>&1; then
		shellcheck packaging/*.sh packaging/scripts/deb/* packaging/scripts/rpm/* || rc=1
	fi
	return $rc
}

binary() {
	[ -x "$JSA_BIN" ] || { echo "$bin is missing: run 'make build'"; return 1; }
	# Static means no program interpreter: no PT_INTERP entry among the ELF program headers.
	python3 - "$JSA_BIN" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
    sys.exit("%s is not a 64-bit little-endian ELF file" % sys.argv[1])
phoff, = struct.unpack_from("<Q", data, 0x20)
phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
for i in range(phnum):
    if struct.unpack_from("<I", data, phoff + i * phentsize)[0] == 3:  # PT_INTERP
        sys.exit("%s is dynamically linked: build it with CGO_ENABLED=0" % sys.argv[1])
PY
}

example_config() {
	python3 - <<'PY'
import sys, yaml
doc = yaml.safe_load(open("packaging/config.example.yaml"))
want = {"efs", "jenkins", "lease", "target_groups", "discover_target_groups", "lifecycle_hook",
        "interruption", "metrics", "control_socket", "state_dir", "webhook"}
if set(doc) != want:
    sys.exit("config.example.yaml top-level keys %s, want %s" % (sorted(doc), sorted(want)))
PY
}

rpm_package() {
	local rpms=(dist/jenkins-spot-agent-*.rpm)
	[ -f "${rpms[0]}" ] || { echo "no dist/jenkins-spot-agent-*.rpm"; return 1; }
	# An RPM starts with the lead magic ed ab ee db.
	[ "$(head -c 4 "${rpms[0]}" | od -An -tx1 | tr -d ' \n')" = edabeedb ] || { echo "${rpms[0]} is not an RPM"; return 1; }
	if command -v rpm >/dev/null 2>&1; then
		rpm -qpl "${rpms[0]}" | grep -qx /usr/lib/systemd/system/jenkins-spot-agent.service || { echo "rpm lacks the unit"; return 1; }
		rpm -qpl "${rpms[0]}" | grep -qx /usr/bin/jenkins-spot-agent || { echo "rpm lacks the binary"; return 1; }
	fi
}

# The RPM scriptlets cannot be installed here without rpm; run them against a
# systemctl that records its calls: enable on first install only, disable on removal
# only, never start or restart.
rpm_scripts() {
	local bin calls
	bin=$(mktemp -d "${TMPDIR:-/tmp}/jsa-rpm-scripts.XXXXXX")
	calls=$bin/calls
	printf '#!/bin/sh\necho "$*" >>"%s"\n' "$calls" >"$bin/systemctl"
	chmod +x "$bin/systemctl"
	expect() { # expect DESCRIPTION SCRIPT ARG WANTED-CALLS
		: >"$calls"
		PATH=$bin:$PATH sh "packaging/scripts/rpm/$2" "$3" >/dev/null || { echo "$2 $3 failed"; return 1; }
		if [ "$(grep -v daemon-reload "$calls" | tr '\n' ';')" != "$4" ]; then
			echo "$1: systemctl calls '$(tr '\n' ';' <"$calls")', want '$4'"
			return 1
		fi
	}
	expect "first install" postinstall 1 "enable jenkins-spot-agent.service;" &&
		expect "upgrade" postinstall 2 "" &&
		expect "removal" preremove 0 "--no-reload disable jenkins-spot-agent.service;" &&
		expect "upgrade" preremove 1 "" &&
		expect "removal" postremove 0 ""
	local rc=$?
	rm -rf "$bin"
	if PATH=/nonexistent /bin/sh packaging/scripts/rpm/postinstall 1 >/dev/null; then :; else
		echo "postinstall fails without systemctl"
		rc=1
	fi
	return $rc
}

# The monitoring mixin: the rendered files match packaging/mixin, promtool accepts
# the rules and passes their unit tests.
monitoring() {
	local tmp rc=0
	tmp=$(mktemp -d "${TMPDIR:-/tmp}/jsa-mixin.XXXXXX")
	go run ./packaging/mixin -out "$tmp" >/dev/null || { rm -rf "$tmp"; echo "the mixin does not render"; return 1; }
	for f in alerts.yml rules.yml dashboards/jenkins-spot-agent.json; do
		cmp -s "$tmp/$f" "packaging/$f" || { echo "packaging/$f is stale: run make mixin"; rc=1; }
	done
	rm -rf "$tmp"
	if ! command -v promtool >/dev/null 2>&1; then
		if [ "${CI:-}" = true ]; then echo "promtool not installed (apt-get install prometheus); CI=true requires it"; return 1; fi
		echo "SKIP: promtool not installed (apt-get install prometheus): rules not checked"
		return $rc
	fi
	promtool check rules packaging/alerts.yml packaging/rules.yml || rc=1
	promtool test rules packaging/alerts_test.yml || rc=1
	return $rc
}

# The packages carry the rendered mixin.
package_contents() {
	local debs=(dist/jenkins-spot-agent_*.deb) f rc=0 listing
	command -v dpkg-deb >/dev/null 2>&1 || { echo "SKIP: dpkg-deb not installed"; return 0; }
	listing=$(dpkg-deb -c "${debs[0]}") || return 1
	for f in alerts.yml rules.yml grafana-dashboard.json; do
		grep -q "/usr/share/doc/jenkins-spot-agent/examples/$f\$" <<<"$listing" || { echo "the .deb lacks examples/$f"; rc=1; }
	done
	return $rc
}

run binary binary
run monitoring monitoring
run shell-syntax shell_syntax
run example-config example_config
run unit packaging/check-unit.sh
run user-data packaging/check-user-data.sh
run iam-policy packaging/check-iam.sh
run cloudformation packaging/check-cfn.sh
if [ "$JSA_BIN" != "$top/dist/jenkins-spot-agent" ]; then
	printf 'FAIL  packages: the packages are built from dist/jenkins-spot-agent, not %s\n' "$bin"
	failed=$((failed + 1))
elif [ -x dist/jenkins-spot-agent ]; then
	run packages packaging/build-packages.sh "$version"
	run deb-install-lintian packaging/check-deb.sh
	run package-contents package_contents
	run rpm rpm_package
	run rpm-scripts rpm_scripts
else
	printf 'FAIL  packages: dist/jenkins-spot-agent is missing\n'
	failed=$((failed + 1))
fi

if [ $failed -gt 0 ]; then
	echo "packaging checks: $failed failed"
	exit 1
fi
echo "packaging checks: all passed"

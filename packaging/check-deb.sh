#!/bin/bash
# Checks the .deb the way an instance would use it, without touching this machine:
#  - dpkg installs it into a scratch root (--root, maintainer scripts run chrootless
#    with DPKG_ROOT set) over a pre-written site config: the config is kept, dpkg asks
#    nothing, the unit is enabled inside the scratch root only;
#  - a reinstall (upgrade path) asks nothing either; remove and purge keep the site
#    config and purge drops the agent's state;
#  - lintian reports no error (the overrides shipped in the package are justified in
#    packaging/lintian/jenkins-spot-agent).
#
#   packaging/check-deb.sh [PATH.deb]     default: the one .deb in dist/
#
# Needs dpkg, init-system-helpers (deb-systemd-helper) and lintian, and root or fakeroot.
# Without them it skips, except under CI=true, where it fails.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

fail() { echo "check-deb: FAIL: $*" >&2; exit 1; }
missing() {
	if [ "${CI:-}" = true ]; then fail "$1 (CI=true: required)"; fi
	echo "check-deb: SKIP: $1" >&2
	exit 0
}

for tool in dpkg dpkg-deb deb-systemd-helper lintian; do
	command -v "$tool" >/dev/null 2>&1 || missing "$tool not installed (apt-get install dpkg init-system-helpers lintian)"
done
as_root=()
if [ "$(id -u)" -ne 0 ]; then
	command -v fakeroot >/dev/null 2>&1 || missing "not root and fakeroot not installed"
	as_root=(fakeroot)
fi

if [ $# -ge 1 ]; then
	deb=$1
else
	shopt -s nullglob
	debs=(dist/jenkins-spot-agent_*.deb)
	[ ${#debs[@]} -eq 1 ] || fail "expected exactly one dist/jenkins-spot-agent_*.deb, found ${#debs[@]}; run packaging/build-packages.sh VERSION"
	deb=${debs[0]}
fi
[ -f "$deb" ] || fail "$deb not found"

root=$(mktemp -d "${TMPDIR:-/tmp}/jsa-deb-root.XXXXXX")
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/var/lib/dpkg/triggers"
: >"$root/var/lib/dpkg/status"
: >"$root/var/lib/dpkg/available"

# The site config cloud-init writes before the package is installed.
mkdir -p "$root/etc/jenkins-spot-agent"
site="$root/etc/jenkins-spot-agent/config.yaml"
printf 'efs:\n  file_system_id: fs-0123456789abcdef0\n# written before the package\n' >"$site"
site_sum=$(sha256sum <"$site")

# What this machine has before: the checks below prove the scratch install left it alone.
host_state() {
	ls -la /etc/systemd/system/multi-user.target.wants/ 2>/dev/null || true
	ls -la /usr/bin/jenkins-spot-agent /etc/jenkins-spot-agent 2>/dev/null || true
}
host_before=$(host_state)

# --force-depends: the scratch root has none of the dependencies (mount, nfs-common);
# everything else is dpkg's normal install logic, conffile handling included.
dpkg_root() {
	"${as_root[@]}" dpkg --root="$root" --force-not-root --force-script-chrootless \
		--force-depends "$@" </dev/null 2>&1
}
no_prompt() {
	# With stdin at EOF a conffile question would either fail or print its prompt.
	if grep -qiE "configuration file|modified \(by you|\*\*\* .* \(Y/I/N/O/D/Z\)" <<<"$1"; then
		echo "$1" >&2
		fail "dpkg asked about a configuration file during $2"
	fi
}

out=$(dpkg_root --install "$deb") || { no_prompt "$out" install; echo "$out" >&2; fail "dpkg --install into a scratch root failed"; }
no_prompt "$out" install
status=$(dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${db:Status-Abbrev}' jenkins-spot-agent)
[ "$status" = "ii " ] || fail "package state after install is '$status', want 'ii '"
[ -x "$root/usr/bin/jenkins-spot-agent" ] || fail "/usr/bin/jenkins-spot-agent not installed executable"
[ -f "$root/lib/systemd/system/jenkins-spot-agent.service" ] || fail "unit not installed in /lib/systemd/system"
[ -f "$root/etc/jenkins-spot-agent/config.example.yaml" ] || fail "config.example.yaml not installed"
grep -qx /etc/jenkins-spot-agent/config.example.yaml "$root/var/lib/dpkg/info/jenkins-spot-agent.conffiles" ||
	fail "config.example.yaml is not a conffile"
if grep -q /etc/jenkins-spot-agent/config.yaml "$root/var/lib/dpkg/info/jenkins-spot-agent.list"; then
	fail "the package owns the site config /etc/jenkins-spot-agent/config.yaml; cloud-init writes it"
fi
[ "$(sha256sum <"$site")" = "$site_sum" ] || fail "install changed the pre-written site config"
[ -L "$root/etc/systemd/system/multi-user.target.wants/jenkins-spot-agent.service" ] ||
	fail "postinst did not enable the unit inside the scratch root"
[ -f "$root/usr/share/doc/jenkins-spot-agent/copyright" ] || fail "copyright file missing"
[ -f "$root/usr/share/lintian/overrides/jenkins-spot-agent" ] || fail "lintian overrides missing"

# An upgrade (reinstall) after the operator edited the example: dpkg keeps the edit
# and asks nothing, because the packaged example did not change.
echo "# edited by the operator" >>"$root/etc/jenkins-spot-agent/config.example.yaml"
out=$(dpkg_root --install "$deb") || { no_prompt "$out" reinstall; echo "$out" >&2; fail "reinstall failed"; }
no_prompt "$out" reinstall
grep -q "edited by the operator" "$root/etc/jenkins-spot-agent/config.example.yaml" ||
	fail "reinstall replaced the operator's edit of config.example.yaml"
[ "$(sha256sum <"$site")" = "$site_sum" ] || fail "reinstall changed the site config"

mkdir -p "$root/var/lib/jenkins-spot-agent"
: >"$root/var/lib/jenkins-spot-agent/latch"
out=$(dpkg_root --remove jenkins-spot-agent) || { echo "$out" >&2; fail "dpkg --remove failed"; }
[ ! -e "$root/usr/bin/jenkins-spot-agent" ] || fail "remove left the binary"
[ -f "$site" ] || fail "remove deleted the site config"
out=$(dpkg_root --purge jenkins-spot-agent) || { echo "$out" >&2; fail "dpkg --purge failed"; }
if [ ! -f "$site" ] || [ "$(sha256sum <"$site")" != "$site_sum" ]; then fail "purge touched the site config"; fi
[ ! -e "$root/var/lib/jenkins-spot-agent" ] || fail "purge left /var/lib/jenkins-spot-agent"
[ ! -e "$root/etc/systemd/system/multi-user.target.wants/jenkins-spot-agent.service" ] ||
	fail "purge left the unit enabled"

[ "$(host_state)" = "$host_before" ] || fail "the scratch-root install changed this machine's /etc/systemd or /usr/bin"

# lintian refuses to run some checks as root only with a warning; hide that line.
lint=$(lintian --fail-on error --display-info --pedantic "$deb" 2>&1) && lint_rc=0 || lint_rc=$?
lint=$(grep -v "running with root privileges is not recommended" <<<"$lint" || true)
if [ -n "$lint" ]; then echo "$lint"; fi
[ "$lint_rc" -eq 0 ] || fail "lintian reported errors for $deb"
echo "check-deb: ok: $deb installs, upgrades and purges cleanly in a scratch root; lintian clean of errors"

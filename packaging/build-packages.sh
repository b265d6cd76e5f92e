#!/bin/sh
# Builds dist/jenkins-spot-agent_VERSION-1_ARCH.deb and the matching .rpm from
# dist/jenkins-spot-agent (make build) with nfpm.
#
#   packaging/build-packages.sh VERSION        e.g. 0.1.0 or 0.2.0~rc1
#
# Environment: ARCH (Go arch of the binary, default amd64); NFPM (the nfpm command,
# default: go run of the pinned release, which needs the Go module proxy once and then
# works from the module cache); SOURCE_DATE_EPOCH (file times, default: last commit).
set -eu

usage() { echo "usage: $0 VERSION   (e.g. 0.1.0; must start with a digit)" >&2; exit 2; }
[ $# -eq 1 ] || usage
version=$1
case "$version" in [0-9]*) ;; *) usage ;; esac
case "$version" in *[!0-9A-Za-z.+~]*) echo "$0: VERSION may contain only digits, letters, '.', '+' and '~'" >&2; exit 2 ;; esac

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

bin=dist/jenkins-spot-agent
if [ ! -x "$bin" ]; then
	echo "$0: $bin is missing or not executable; run 'make build' first" >&2
	exit 1
fi

arch=${ARCH:-amd64}
nfpm=${NFPM:-go run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2}
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH

# Generated inputs that nfpm.yaml names under dist/.pkg/.
stage=dist/.pkg
rm -rf "$stage"
mkdir -p "$stage"
gzip -9n <packaging/jenkins-spot-agent.1 >"$stage/jenkins-spot-agent.1.gz"

# The newest changelog entry must be this version; a snapshot build gets one on top.
newest=$(sed -n '1s/^jenkins-spot-agent (\([^)]*\)).*/\1/p' packaging/changelog)
if [ "$newest" = "$version-1" ]; then
	cp packaging/changelog "$stage/changelog.Debian"
else
	when=$(LC_ALL=C date -u -d "@$SOURCE_DATE_EPOCH" '+%a, %d %b %Y %H:%M:%S +0000')
	packager=$(sed -n 's/^maintainer: *//p' packaging/nfpm.yaml)
	{
		printf 'jenkins-spot-agent (%s-1) UNRELEASED; urgency=medium\n\n' "$version"
		printf '  * Snapshot build of %s.\n\n' "$version"
		printf ' -- %s  %s\n\n' "$packager" "$when"
		cat packaging/changelog
	} >"$stage/changelog.Debian"
fi
gzip -9n "$stage/changelog.Debian"

rm -f dist/jenkins-spot-agent_*.deb dist/jenkins-spot-agent-*.rpm
for packager in deb rpm; do
	JSA_VERSION=$version JSA_ARCH=$arch $nfpm package \
		--config packaging/nfpm.yaml --packager "$packager" --target dist/
done
ls -l dist/*.deb dist/*.rpm

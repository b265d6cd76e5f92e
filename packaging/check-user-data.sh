#!/bin/bash
# Checks packaging/user-data.yaml (or the file given):
#  - `cloud-init schema` accepts it;
#  - the properties an operator relies on: the token is read by the agent from SSM or
#    Secrets Manager (then no token file, no AWS CLI, the unit's LoadCredential=
#    cleared), or its file is root-only 0600 (written here, or fetched by the
#    bootstrap under umask 077); the
#    bootstrap script parses, installs the package, runs preflight before starting the
#    agent, talks to IMDS only with a session token, names no region and mounts nothing.
# Without cloud-init it skips, except under CI=true, where it fails.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
file=${1:-packaging/user-data.yaml}

fail() { echo "check-user-data: FAIL: $file: $*" >&2; exit 1; }
if ! command -v cloud-init >/dev/null 2>&1; then
	if [ "${CI:-}" = true ]; then fail "cloud-init not installed (apt-get install cloud-init); CI=true requires it"; fi
	echo "check-user-data: SKIP: cloud-init not installed (apt-get install cloud-init)" >&2
	exit 0
fi

out=$(cloud-init schema --config-file "$file" 2>&1) || { echo "$out" >&2; fail "cloud-init schema rejected it"; }
# cloud-init's own Python has PyYAML (python3-yaml is one of its dependencies).
py=/usr/bin/python3
[ -x "$py" ] || py=python3

dir=$(mktemp -d "${TMPDIR:-/tmp}/jsa-user-data.XXXXXX")
trap 'rm -rf "$dir"' EXIT
"$py" - "$file" "$dir" <<'PY' || exit 1
import sys, yaml

path, out = sys.argv[1], sys.argv[2]
doc = yaml.safe_load(open(path))
errors = []
files = {f["path"]: f for f in doc.get("write_files", [])}

token = files.get("/etc/jenkins-spot-agent/jenkins-api-token")
boot = files.get("/usr/local/sbin/jenkins-spot-agent-bootstrap")
config = files.get("/etc/jenkins-spot-agent/config.yaml")
site = yaml.safe_load(config["content"]) if config else {}
jenkins = (site or {}).get("jenkins") or {}
from_aws = bool(jenkins.get("api_token_ssm_parameter") or jenkins.get("api_token_secret_id"))
if from_aws:
    # The agent reads the token itself: no token file, no AWS CLI, and the unit's
    # LoadCredential= cleared so that the missing file does not stop it.
    script = boot["content"] if boot else ""
    if token:
        errors.append("writes a token file although the site config reads the token from AWS")
    if "aws " in script or "awscli" in (doc.get("packages") or []):
        errors.append("calls the AWS CLI: the agent reads the token itself")
    dropin = files.get("/etc/systemd/system/jenkins-spot-agent.service.d/token-from-aws.conf")
    if not dropin or "LoadCredential=\n" not in dropin["content"]:
        errors.append("does not clear the unit's LoadCredential= (a drop-in with an empty LoadCredential=)")
elif not token:
    # Fetched at boot instead (SSM): the script must create it root-only.
    script = boot["content"] if boot else ""
    if "/etc/jenkins-spot-agent/jenkins-api-token" not in script or "umask 077" not in script:
        errors.append("neither writes /etc/jenkins-spot-agent/jenkins-api-token (0600) nor fetches it under umask 077")
elif str(token.get("permissions")) != "0600" or token.get("owner") != "root:root":
    errors.append("the token file must be owner root:root, permissions '0600'")

if not config:
    errors.append("does not write /etc/jenkins-spot-agent/config.yaml")
else:
    if not site.get("efs", {}).get("file_system_id"):
        errors.append("site config lacks efs.file_system_id")

if not boot:
    errors.append("does not write the bootstrap script")
else:
    open(out + "/bootstrap.sh", "w").write(boot["content"])

if "mounts" in doc:
    errors.append("uses the mounts module: the agent mounts EFS and verifies it")
for e in errors:
    print("check-user-data: FAIL: %s: %s" % (path, e), file=sys.stderr)
sys.exit(1 if errors else 0)
PY

script=$dir/bootstrap.sh
sh -n "$script" || fail "the bootstrap script does not parse"
# shellcheck disable=SC2016 # a literal $deb in the script
grep -q 'apt-get install .*"\$deb"' "$script" || fail "the bootstrap script does not install the package"
pre=$(grep -n 'jenkins-spot-agent preflight' "$script" | head -n 1 | cut -d: -f1)
start=$(grep -n 'systemctl enable --now jenkins-spot-agent' "$script" | head -n 1 | cut -d: -f1)
if [ -z "$pre" ] || [ -z "$start" ] || [ "$pre" -ge "$start" ]; then fail "preflight must run before the agent is started"; fi
# Every metadata read carries a session token (IMDSv2). Commands continued with a
# backslash are joined first so that a header and its URL are on one line.
joined=$(sed -e ':a' -e '/\\$/N; s/\\\n//; ta' "$script")
if grep '169\.254\.169\.254/latest/meta-data' <<<"$joined" | grep -qv 'X-aws-ec2-metadata-token:'; then
	fail "a metadata request without an IMDSv2 token"
fi
if grep -qE '(^|[^a-z-])(us|eu|ap|sa|ca|me|af|il|mx)-(north|south|east|west|central|northeast|southeast|northwest|southwest)-[0-9]' "$file"; then
	fail "names a region; the agent reads it from instance metadata"
fi
if grep -v '^[[:space:]]*#' "$script" | grep -qE '(^|[[:space:];])(mount|/etc/fstab)([[:space:]]|$)'; then
	fail "mounts something itself; the agent mounts and verifies EFS"
fi
echo "check-user-data: ok: $file"

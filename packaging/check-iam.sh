#!/bin/bash
# Checks packaging/iam-policy.json: valid JSON (python3 -m json.tool), and least
# privilege as docs/iam.md describes it: only the agent's actions, no wildcard action,
# and "*" only for the actions that support no resource-level permissions.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
file=${1:-packaging/iam-policy.json}

fail() { echo "check-iam: FAIL: $file: $*" >&2; exit 1; }
command -v python3 >/dev/null 2>&1 || fail "python3 not installed"
python3 -m json.tool "$file" >/dev/null || fail "not valid JSON"

python3 - "$file" <<'PY'
import json, sys

path = sys.argv[1]
doc = json.load(open(path))
# Actions that support no resource-level permissions: "*" is the only valid resource.
star_only = {
    "elasticloadbalancing:DescribeTargetHealth",
    "autoscaling:DescribeAutoScalingInstances",
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:DescribeLifecycleHooks",
    "ec2:DescribeInstances",
}
# Actions that must be scoped, with the ARN prefix of their resource type.
scoped = {
    "elasticloadbalancing:DeregisterTargets": "arn:aws:elasticloadbalancing:",
    "elasticloadbalancing:RegisterTargets": "arn:aws:elasticloadbalancing:",
    "autoscaling:CompleteLifecycleAction": "arn:aws:autoscaling:",
    "autoscaling:RecordLifecycleActionHeartbeat": "arn:aws:autoscaling:",
    "autoscaling:DetachInstances": "arn:aws:autoscaling:",
    "elasticfilesystem:ClientMount": "arn:aws:elasticfilesystem:",
    "elasticfilesystem:ClientWrite": "arn:aws:elasticfilesystem:",
    "elasticfilesystem:ClientRootAccess": "arn:aws:elasticfilesystem:",
    "elasticfilesystem:DescribeMountTargets": "arn:aws:elasticfilesystem:",
    "ssm:GetParameter": "arn:aws:ssm:",
    "secretsmanager:GetSecretValue": "arn:aws:secretsmanager:",
    "kms:Decrypt": "arn:aws:kms:",
}
# The token is one parameter or secret: its name may not be a wildcard (Secrets
# Manager's six random characters aside), and KMS decrypts only on behalf of them.
exact = {"ssm:GetParameter", "secretsmanager:GetSecretValue"}
errors = []
if doc.get("Version") != "2012-10-17":
    errors.append('Version must be "2012-10-17"')
seen = set()
for st in doc.get("Statement", []):
    sid = st.get("Sid", "?")
    if st.get("Effect") != "Allow":
        errors.append("%s: only Allow statements are expected" % sid)
    actions = st.get("Action", [])
    actions = [actions] if isinstance(actions, str) else actions
    resources = st.get("Resource", [])
    resources = [resources] if isinstance(resources, str) else resources
    if "NotAction" in st or "NotResource" in st:
        errors.append("%s: NotAction/NotResource grant more than they name" % sid)
    for a in actions:
        seen.add(a)
        if "*" in a:
            errors.append("%s: wildcard action %s" % (sid, a))
        elif a in star_only:
            if resources != ["*"]:
                errors.append('%s: %s supports no resource-level permissions; use "*"' % (sid, a))
        elif a in scoped:
            for r in resources:
                if r == "*" or not r.startswith(scoped[a]):
                    errors.append("%s: %s must be scoped to %s... resources, not %s" % (sid, a, scoped[a], r))
                elif a in exact and "*" in r:
                    errors.append("%s: %s must name exactly one parameter or secret, not %s" % (sid, a, r))
            if a == "kms:Decrypt":
                via = st.get("Condition", {}).get("StringEquals", {}).get("kms:ViaService")
                if not via:
                    errors.append("%s: kms:Decrypt needs a kms:ViaService condition (ssm/secretsmanager only)" % sid)
        else:
            errors.append("%s: %s is not an action the agent uses (see docs/iam.md)" % (sid, a))
missing = (star_only | set(scoped)) - seen
if missing:
    errors.append("actions missing: " + ", ".join(sorted(missing)))
for e in errors:
    print("check-iam: FAIL: %s: %s" % (path, e), file=sys.stderr)
sys.exit(1 if errors else 0)
PY
echo "check-iam: ok: $file"

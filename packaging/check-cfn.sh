#!/bin/bash
# Checks packaging/cloudformation.yaml:
#  1. cfn-lint, when installed, reports nothing (warnings count as failures);
#  2. always, with Python and PyYAML only: the properties the architecture depends on
#     (IMDSv2 with hop limit 1, EC2 health checks, Capacity Rebalancing, the
#     termination hook, the short deregistration delay, NFS only from the controller),
#     and that the inline role policy grants exactly packaging/iam-policy.json's actions
#     (the token's parameter or secret and its key included);
#  3. the launch template's user data, rendered with sample values, passes
#     packaging/check-user-data.sh (cloud-init schema and the user data rules).
#
# cfn-lint comes from PyPI (pip install cfn-lint); Debian 12 has no package for it.
# Where it cannot be installed the check says so loudly and runs 2 and 3 only; set
# JSA_REQUIRE_CFN_LINT=true to make its absence a failure.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
file=${1:-packaging/cloudformation.yaml}

fail() { echo "check-cfn: FAIL: $file: $*" >&2; exit 1; }

# CFN_LINT names the cfn-lint to run; by default the one on PATH or in pyenv's shims.
cfn_lint=${CFN_LINT:-$(command -v cfn-lint 2>/dev/null || true)}
if [ -z "$cfn_lint" ] && [ -x "$HOME/.pyenv/shims/cfn-lint" ]; then cfn_lint=$HOME/.pyenv/shims/cfn-lint; fi
linted=no
if [ -n "$cfn_lint" ] && "$cfn_lint" --version >/dev/null 2>&1; then
	out=$("$cfn_lint" --include-checks I -- "$file" 2>&1) || { echo "$out" >&2; fail "cfn-lint reported problems"; }
	[ -z "$out" ] || { echo "$out" >&2; fail "cfn-lint printed findings"; }
	linted=yes
elif [ "${JSA_REQUIRE_CFN_LINT:-}" = true ]; then
	fail "cfn-lint is not installed and JSA_REQUIRE_CFN_LINT=true (pip install cfn-lint)"
else
	echo "check-cfn: WARNING: cfn-lint is NOT installed: the template is NOT linted against the CloudFormation schema." >&2
	echo "check-cfn: WARNING: install it with 'pip install cfn-lint' (PyPI; no Debian 12 package). Running the structural checks only." >&2
fi

py=/usr/bin/python3
[ -x "$py" ] || py=python3
"$py" -c 'import yaml' 2>/dev/null || fail "PyPI-free checks need PyYAML (apt-get install python3-yaml)"

dir=$(mktemp -d "${TMPDIR:-/tmp}/jsa-cfn.XXXXXX")
trap 'rm -rf "$dir"' EXIT
"$py" - "$file" packaging/iam-policy.json "$dir/user-data.yaml" <<'PY' || exit 1
import json, re, sys, yaml

path, policy_path, user_data_out = sys.argv[1:4]


class Tag:
    """A CloudFormation intrinsic function (!Ref, !Sub, ...), kept as tag and value."""

    def __init__(self, tag, value):
        self.tag, self.value = tag, value


def construct(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return Tag(suffix, value)


class Loader(yaml.SafeLoader):
    pass


Loader.add_multi_constructor("!", construct)
doc = yaml.load(open(path), Loader=Loader)
res = doc["Resources"]
errors = []


def want(cond, msg):
    if not cond:
        errors.append(msg)


def of_type(t):
    return {k: v for k, v in res.items() if v["Type"] == t}


for p in ["VpcId", "SubnetIds", "JenkinsImage", "PackageUrl", "KeyName", "AllowedCidr"]:
    want(p in doc.get("Parameters", {}), "parameter %s missing" % p)

fs = of_type("AWS::EFS::FileSystem")
want(len(fs) == 1, "want one EFS file system")
for name, r in fs.items():
    p = r["Properties"]
    want(p.get("Encrypted") is True, "%s: Encrypted must be true" % name)
    want(p.get("ThroughputMode") == "elastic", "%s: ThroughputMode must be elastic" % name)
    want(p.get("BackupPolicy", {}).get("Status") == "ENABLED", "%s: backups must be enabled" % name)
    want(r.get("DeletionPolicy") == "Retain", "%s: DeletionPolicy must be Retain (it is JENKINS_HOME)" % name)
want(len(of_type("AWS::EFS::MountTarget")) >= 2, "want mount targets in two subnets")

for name, r in of_type("AWS::EC2::SecurityGroup").items():
    for rule in r["Properties"].get("SecurityGroupIngress", []):
        if rule.get("FromPort", 0) <= 2049 <= rule.get("ToPort", -1):
            want("SourceSecurityGroupId" in rule and "CidrIp" not in rule,
                 "%s: NFS (2049) must be open to the controller's security group only" % name)

tgs = of_type("AWS::ElasticLoadBalancingV2::TargetGroup")
want(len(tgs) == 1, "want one target group")
for name, r in tgs.items():
    p = r["Properties"]
    want(p.get("HealthCheckPath") == "/login", "%s: health check path must be /login" % name)
    want(str(p.get("Matcher", {}).get("HttpCode")) == "200", "%s: matcher must be 200" % name)
    # The successor is healthy as soon as ELB allows (two checks 5 s apart), a stopped
    # Jenkins unhealthy as fast; the timeout must be shorter than the interval.
    interval = int(p.get("HealthCheckIntervalSeconds", 30))
    want(interval == 5, "%s: HealthCheckIntervalSeconds %d, want 5 (the shortest)" % (name, interval))
    want(int(p.get("HealthyThresholdCount", 5)) == 2, "%s: HealthyThresholdCount must be 2 (the fewest)" % name)
    want(int(p.get("UnhealthyThresholdCount", 2)) == 2, "%s: UnhealthyThresholdCount must be 2 (the fewest)" % name)
    want(int(p.get("HealthCheckTimeoutSeconds", 5)) < interval, "%s: HealthCheckTimeoutSeconds must be under the interval" % name)
    attrs = {a["Key"]: a["Value"] for a in p.get("TargetGroupAttributes", [])}
    delay = int(attrs.get("deregistration_delay.timeout_seconds", 300))
    want(delay < 120, "%s: deregistration delay %d s must be under 120 s for Spot" % (name, delay))
    want(delay <= 30, "%s: deregistration delay %d s: Jenkins is stopped within its 30 s stop_grace of the deregistration, a longer delay only holds the group's detach back" % (name, delay))

lts = of_type("AWS::EC2::LaunchTemplate")
want(len(lts) == 1, "want one launch template")
for name, r in lts.items():
    data = r["Properties"]["LaunchTemplateData"]
    md = data.get("MetadataOptions", {})
    want(md.get("HttpTokens") == "required", "%s: HttpTokens must be required (IMDSv2 only)" % name)
    want(md.get("HttpPutResponseHopLimit") == 1, "%s: hop limit must be 1 (keeps the container off the role)" % name)
    want(md.get("InstanceMetadataTags") == "enabled", "%s: InstanceMetadataTags must be enabled" % name)
    ud = data.get("UserData")
    ok = isinstance(ud, dict) and isinstance(ud.get("Fn::Base64"), Tag) and ud["Fn::Base64"].tag == "Sub"
    want(ok, "%s: UserData must be Fn::Base64 of !Sub" % name)
    sub_vars = {}
    if ok and isinstance(ud["Fn::Base64"].value, list):
        # !Sub [text, {name: value}]: the variables render with their
        # Parameter Store branch (the default).
        text, variables = ud["Fn::Base64"].value
        ud["Fn::Base64"].value = text
        for k, v in variables.items():
            if isinstance(v, Tag) and v.tag == "If":
                v = v.value[2]
            if isinstance(v, Tag) and v.tag == "Ref":
                v = "${%s}" % v.value
            sub_vars[k] = v
    if ok:
        samples = {
            "AWS::StackName": "jenkins", "AWS::Region": "REGION", "FileSystem": "fs-0123456789abcdef0",
            "TargetGroup": "arn:aws:elasticloadbalancing:REGION:111111111111:targetgroup/jenkins/0123456789abcdef",
            "JenkinsImage": "jenkins/jenkins:lts-jdk21", "JenkinsUser": "admin",
            "PackageUrl": "https://example.invalid/jenkins-spot-agent_0.1.0-1_amd64.deb",
            "PackageSha256": "0" * 64, "ApiTokenParameterName": "/jenkins-spot-agent/jenkins-api-token",
        }
        text = ud["Fn::Base64"].value
        for k, v in sub_vars.items():
            text = text.replace("${%s}" % k, v)
        unknown = set(re.findall(r"\$\{([^!}][^}]*)\}", text)) - set(samples)
        want(not unknown, "%s: user data substitutes unknown names %s" % (name, sorted(unknown)))
        rendered = re.sub(r"\$\{([^!}][^}]*)\}", lambda m: samples.get(m.group(1), "X"), text)
        open(user_data_out, "w").write(rendered.replace("${!", "${"))

asgs = of_type("AWS::AutoScaling::AutoScalingGroup")
want(len(asgs) == 1, "want one Auto Scaling group")
for name, r in asgs.items():
    p = r["Properties"]
    def size(v):
        # A !Ref to a parameter counts as that parameter's default.
        if isinstance(v, Tag) and v.tag == "Ref":
            return str(doc["Parameters"][v.value].get("Default"))
        return str(v)
    want(size(p.get("MinSize")) == size(p.get("MaxSize")) == size(p.get("DesiredCapacity")) == "1",
         "%s: min = max = desired = 1" % name)
    want(p.get("CapacityRebalance") is True, "%s: CapacityRebalance must be true" % name)
    want(p.get("HealthCheckType") == "EC2", "%s: HealthCheckType must be EC2 (a lease-waiting instance is healthy)" % name)
    want(bool(p.get("TargetGroupARNs")), "%s: TargetGroupARNs missing" % name)
    mip = p.get("MixedInstancesPolicy", {})
    dist = mip.get("InstancesDistribution", {})
    want(dist.get("OnDemandBaseCapacity") == 0 and dist.get("OnDemandPercentageAboveBaseCapacity") == 0,
         "%s: all capacity must be Spot" % name)
    want(dist.get("SpotAllocationStrategy") == "capacity-optimized", "%s: capacity-optimized allocation" % name)
    types = {o["InstanceType"] for o in mip.get("LaunchTemplate", {}).get("Overrides", [])}
    want(types == {"t2.large", "t3.large", "m4.large", "m5.large", "c5.large", "c4.large"},
         "%s: instance types %s" % (name, sorted(types)))
    hooks = [h for h in p.get("LifecycleHookSpecificationList", [])
             if h.get("LifecycleTransition") == "autoscaling:EC2_INSTANCE_TERMINATING"]
    want(len(hooks) == 1, "%s: want one termination lifecycle hook" % name)
    for h in hooks:
        want(h.get("DefaultResult") == "CONTINUE", "%s: hook default result must be CONTINUE" % name)
        want(120 <= int(h.get("HeartbeatTimeout", 0)) <= 300, "%s: hook heartbeat should cover the plan (~150 s)" % name)

# The inline policy must grant what iam-policy.json grants (and the token read), no more.
policy = json.load(open(policy_path))


def actions(statements):
    out = set()
    for st in statements:
        if isinstance(st, Tag) and st.tag == "If":
            # Condition-dependent statement: both branches count (one is AWS::NoValue).
            out |= actions([b for b in st.value[1:] if isinstance(b, dict)])
            continue
        a = st.get("Action", [])
        out |= {a} if isinstance(a, str) else set(a)
    return out


want_actions = actions(policy["Statement"])
got = set()
for name, r in of_type("AWS::IAM::Role").items():
    for pol in r["Properties"].get("Policies", []):
        got |= actions(pol["PolicyDocument"]["Statement"])
want(got == want_actions, "role policy differs from packaging/iam-policy.json: extra %s, missing %s"
     % (sorted(got - want_actions), sorted(want_actions - got)))

for e in errors:
    print("check-cfn: FAIL: %s: %s" % (path, e), file=sys.stderr)
sys.exit(1 if errors else 0)
PY

packaging/check-user-data.sh "$dir/user-data.yaml" >/dev/null || fail "the launch template's user data fails packaging/check-user-data.sh"
if [ "$linted" = yes ]; then
	echo "check-cfn: ok: $file (cfn-lint clean, structure and user data checked)"
else
	echo "check-cfn: ok (NOT LINTED: cfn-lint missing): $file (structure and user data checked)"
fi

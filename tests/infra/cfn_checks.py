"""Checks on infra/template.yaml that cfn-lint does not make.

Each ``check_*`` function takes the parsed template (a dict, short tags expanded to their long
``{"Ref": ...}`` / ``{"Fn::...": ...}`` form) and returns a list of problems, empty when the
template is right. They are plain functions so that the tests can run them against deliberately
broken copies of the template and see them fail.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
# INFRA_TEMPLATE (set by check.sh) checks another copy, e.g. a deliberately broken one.
TEMPLATE = (REPO / os.environ.get("INFRA_TEMPLATE", "infra/template.yaml")).resolve()

FUNCTION_TYPES = ("AWS::Serverless::Function", "AWS::Lambda::Function")
#: SAM's default function timeout when neither the function nor Globals set one.
SAM_DEFAULT_TIMEOUT = 3


# --------------------------------------------------------------------------------------------
# Loading: a YAML loader that understands CloudFormation's short-form intrinsic functions.
# --------------------------------------------------------------------------------------------
class CfnLoader(yaml.SafeLoader):
    """SafeLoader plus !Ref, !GetAtt, !Sub, !If, !Equals, ... (any `!Name` -> `Fn::Name`)."""


def _construct_tag(loader: CfnLoader, tag_suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "Condition":
        return {"Condition": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        # !GetAtt Res.Attr.Sub  ->  ["Res", "Attr.Sub"]
        resource, _, attribute = value.partition(".")
        value = [resource, attribute]
    return {f"Fn::{tag_suffix}": value}


CfnLoader.add_multi_constructor("!", _construct_tag)


def load_text(text: str) -> dict:
    return yaml.load(text, Loader=CfnLoader)  # noqa: S506 - SafeLoader subclass


def load(path: Path = TEMPLATE) -> dict:
    return load_text(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def resources(t: dict, *types: str) -> dict[str, dict]:
    return {
        name: res
        for name, res in (t.get("Resources") or {}).items()
        if not types or res.get("Type") in types
    }


def functions(t: dict) -> dict[str, dict]:
    return resources(t, *FUNCTION_TYPES)


def props(res: dict) -> dict:
    return res.get("Properties") or {}


def resolve(t: dict, value: Any) -> Any:
    """Resolves a `Ref` to a parameter to its Default (what a deploy without overrides gets)."""
    if isinstance(value, dict) and set(value) == {"Ref"}:
        name = value["Ref"]
        params = t.get("Parameters") or {}
        if name in params:
            return params[name].get("Default")
    return value


def ref_target(value: Any) -> str | None:
    """The logical id a `Ref` or `Fn::GetAtt` points at, else None."""
    if isinstance(value, dict):
        if set(value) == {"Ref"}:
            return value["Ref"]
        if set(value) == {"Fn::GetAtt"}:
            target = value["Fn::GetAtt"]
            if isinstance(target, list) and target:
                return target[0]
    return None


def as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\d+", value.strip()):
        return int(value)
    return None


def function_timeout(t: dict, name: str) -> Any:
    fn = functions(t)[name]
    timeout = props(fn).get("Timeout")
    if timeout is None and fn.get("Type") == "AWS::Serverless::Function":
        timeout = ((t.get("Globals") or {}).get("Function") or {}).get("Timeout")
    if timeout is None:
        timeout = SAM_DEFAULT_TIMEOUT
    return as_int(resolve(t, timeout))


def events(fn: dict, event_type: str) -> dict[str, dict]:
    return {
        name: ev
        for name, ev in (props(fn).get("Events") or {}).items()
        if isinstance(ev, dict) and ev.get("Type") == event_type
    }


def sqs_consumers(t: dict) -> list[tuple[str, str, dict]]:
    """(function, queue logical id, event properties) for every SQS event source."""
    found = []
    for name, fn in functions(t).items():
        for ev in events(fn, "SQS").values():
            p = ev.get("Properties") or {}
            found.append((name, ref_target(p.get("Queue")), p))
    for name, esm in resources(t, "AWS::Lambda::EventSourceMapping").items():
        p = props(esm)
        queue = ref_target(p.get("EventSourceArn"))
        if queue in resources(t, "AWS::SQS::Queue"):
            found.append((ref_target(p.get("FunctionName")) or name, queue, p))
    return found


# --------------------------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------------------------
def check_visibility_timeout(t: dict) -> list[str]:
    """Each SQS-consumed queue's VisibilityTimeout >= 6 x its consumer's Timeout (AWS guidance)."""
    problems = []
    queues = resources(t, "AWS::SQS::Queue")
    consumers = sqs_consumers(t)
    if not consumers:
        problems.append("no function consumes an SQS queue")
    for fn, queue, _ in consumers:
        if queue not in queues:
            problems.append(f"{fn}: SQS event source does not name a queue of this template")
            continue
        visibility = as_int(resolve(t, props(queues[queue]).get("VisibilityTimeout", 30)))
        timeout = function_timeout(t, fn) if fn in functions(t) else None
        if visibility is None or timeout is None:
            problems.append(f"{queue}/{fn}: VisibilityTimeout or Timeout is not a number")
        elif visibility < 6 * timeout:
            problems.append(
                f"{queue}: VisibilityTimeout {visibility} < 6 x {fn} Timeout {timeout} = {6 * timeout}"
            )
    return problems


def check_dlq_redrive(t: dict) -> list[str]:
    """Every SQS-consumed queue has a RedrivePolicy to a queue of this template with
    maxReceiveCount >= 1."""
    problems = []
    queues = resources(t, "AWS::SQS::Queue")
    consumed = {q for _, q, _ in sqs_consumers(t)}
    if not consumed:
        problems.append("no consumed queue to check")
    for name in sorted(consumed & set(queues)):
        redrive = props(queues[name]).get("RedrivePolicy")
        if not isinstance(redrive, dict):
            problems.append(f"{name}: no RedrivePolicy")
            continue
        target = ref_target(redrive.get("deadLetterTargetArn"))
        if target not in queues:
            problems.append(f"{name}: deadLetterTargetArn is not a queue of this template")
        count = redrive.get("maxReceiveCount")
        if count is None:
            problems.append(f"{name}: RedrivePolicy.maxReceiveCount is not set")
            continue
        count = as_int(resolve(t, count))
        if count is None or count < 1:
            problems.append(f"{name}: maxReceiveCount must be an integer >= 1, got {count!r}")
        ref = redrive["maxReceiveCount"]
        if isinstance(ref, dict) and "Ref" in ref:
            param = (t.get("Parameters") or {}).get(ref["Ref"], {})
            if as_int(param.get("MinValue")) is None or as_int(param.get("MinValue")) < 1:
                problems.append(f"{name}: parameter {ref['Ref']} must have MinValue >= 1")
    return problems


def check_report_batch_item_failures(t: dict) -> list[str]:
    """Every SQS event source has FunctionResponseTypes exactly [ReportBatchItemFailures]."""
    problems = []
    consumers = sqs_consumers(t)
    if not consumers:
        problems.append("no SQS event source")
    for fn, queue, p in consumers:
        types = p.get("FunctionResponseTypes")
        if types != ["ReportBatchItemFailures"]:
            problems.append(
                f"{fn}: FunctionResponseTypes must be exactly [ReportBatchItemFailures], got {types!r}"
            )
        batch = as_int(resolve(t, p.get("BatchSize", 10)))
        if batch is None or not 1 <= batch <= 10:
            problems.append(f"{fn}: BatchSize for a FIFO queue must be 1..10, got {batch!r}")
    return problems


_RATE = re.compile(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)")
_CRON_FIELD = [
    r"[0-9,\-*/]+",  # minutes
    r"[0-9,\-*/]+",  # hours
    r"[0-9,\-*/?LW]+",  # day of month
    r"([0-9,\-*/]|JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC)+",  # month
    r"([0-9,\-*/?L#]|SUN|MON|TUE|WED|THU|FRI|SAT)+",  # day of week
    r"[0-9,\-*/]+",  # year
]


def schedule_problem(expression: Any) -> str | None:
    """Why an EventBridge schedule expression is invalid, or None."""
    if not isinstance(expression, str):
        return f"not a string: {expression!r}"
    m = _RATE.fullmatch(expression)
    if m:
        value, unit = int(m.group(1)), m.group(2)
        if value < 1:
            return f"{expression}: the value must be positive"
        if (value == 1) != (not unit.endswith("s")):
            return f"{expression}: use the singular unit for 1 and the plural otherwise"
        return None
    if expression.startswith("cron(") and expression.endswith(")"):
        fields = expression[5:-1].split(" ")
        if len(fields) != 6:
            return f"{expression}: cron needs 6 fields (min hour day-of-month month day-of-week year)"
        for pattern, field in zip(_CRON_FIELD, fields):
            if not re.fullmatch(pattern, field.upper()):
                return f"{expression}: bad field {field!r}"
        if (fields[2] == "?") == (fields[4] == "?"):
            return f"{expression}: exactly one of day-of-month and day-of-week must be '?'"
        return None
    if expression.startswith("at(") and expression.endswith(")"):
        return f"{expression}: a one-time at() schedule is not a recurring schedule"
    return f"{expression}: neither rate(...) nor cron(...)"


def schedule_expressions(t: dict) -> list[tuple[str, Any]]:
    found = []
    for name, fn in functions(t).items():
        for kind in ("Schedule", "ScheduleV2"):
            for ev_name, ev in events(fn, kind).items():
                expr = (ev.get("Properties") or {}).get("Schedule" if kind == "Schedule" else "ScheduleExpression")
                found.append((f"{name}.{ev_name}", expr))
    for name, rule in resources(t, "AWS::Events::Rule").items():
        if "ScheduleExpression" in props(rule):
            found.append((name, props(rule)["ScheduleExpression"]))
    for name, sched in resources(t, "AWS::Scheduler::Schedule").items():
        found.append((name, props(sched).get("ScheduleExpression")))
    return found


def check_schedules(t: dict) -> list[str]:
    """Every schedule is a valid rate(...) / cron(...) (parameter defaults resolved), and a
    parameter that feeds one has an AllowedPattern that refuses invalid ones."""
    problems = []
    found = schedule_expressions(t)
    if not found:
        problems.append("no schedules")
    params = t.get("Parameters") or {}
    for where, expr in found:
        problem = schedule_problem(resolve(t, expr))
        if problem:
            problems.append(f"{where}: {problem}")
        if isinstance(expr, dict) and expr.get("Ref") in params:
            pattern = params[expr["Ref"]].get("AllowedPattern")
            if not pattern:
                problems.append(f"{where}: parameter {expr['Ref']} has no AllowedPattern")
    return problems


def check_webhook_timeout(t: dict, limit: int = 10) -> list[str]:
    """The function behind the HTTP API answers Graph fast: Timeout <= 10 s."""
    problems = []
    webhooks = [n for n, fn in functions(t).items() if events(fn, "HttpApi") or events(fn, "Api")]
    if not webhooks:
        problems.append("no function behind an HTTP API")
    for name in webhooks:
        timeout = function_timeout(t, name)
        if timeout is None or timeout > limit:
            problems.append(f"{name}: Timeout {timeout} > {limit} s (Graph: 3 s, validation 10 s)")
    return problems


def check_own_roles(t: dict) -> list[str]:
    """Every function has a role of its own: a Role of this template used by no other function
    (or none, so that SAM generates one per function)."""
    problems = []
    roles = resources(t, "AWS::IAM::Role")
    users: dict[str, list[str]] = {}
    for name, fn in functions(t).items():
        role = props(fn).get("Role")
        if role is None:
            if fn.get("Type") != "AWS::Serverless::Function":
                problems.append(f"{name}: no Role")
            continue
        target = ref_target(role)
        if target is None or target not in roles:
            problems.append(f"{name}: Role must be a role of this template, got {role!r}")
            continue
        users.setdefault(target, []).append(name)
    for role, fns in sorted(users.items()):
        if len(fns) > 1:
            problems.append(f"role {role} is shared by {', '.join(sorted(fns))}")
        for trust in (props(roles[role]).get("AssumeRolePolicyDocument") or {}).get("Statement", []):
            principal = (trust.get("Principal") or {}).get("Service")
            if principal != "lambda.amazonaws.com":
                problems.append(f"role {role} must be assumable by lambda.amazonaws.com only")
    globals_role = ((t.get("Globals") or {}).get("Function") or {}).get("Role")
    if globals_role is not None:
        problems.append("Globals.Function.Role would give every function the same role")
    return problems


def _statements(doc: Any) -> list[dict]:
    if not isinstance(doc, dict):
        return []
    statements = doc.get("Statement", [])
    return [s for s in (statements if isinstance(statements, list) else [statements]) if isinstance(s, dict)]


def check_no_wildcards(t: dict) -> list[str]:
    """Allow statements of the template's own IAM policies never use Resource "*" nor
    "service:*" actions (AWS managed policies for X-Ray / ENIs are attached by ARN instead)."""
    problems = []
    for name, res in resources(t, "AWS::IAM::Role", "AWS::IAM::ManagedPolicy", "AWS::IAM::Policy").items():
        p = props(res)
        docs = [p.get("PolicyDocument")] + [pol.get("PolicyDocument") for pol in p.get("Policies") or []]
        for doc in docs:
            for st in _statements(doc):
                if st.get("Effect") != "Allow":
                    continue
                res_list = st.get("Resource")
                res_list = res_list if isinstance(res_list, list) else [res_list]
                if any(r == "*" for r in res_list):
                    problems.append(f"{name}: statement {st.get('Sid', '?')} allows Resource '*'")
                actions = st.get("Action")
                actions = actions if isinstance(actions, list) else [actions]
                if any(isinstance(a, str) and a.endswith(":*") or a == "*" for a in actions):
                    problems.append(f"{name}: statement {st.get('Sid', '?')} allows a wildcard action")
    return problems


def check_fifo_queues(t: dict) -> list[str]:
    """Both queues are FIFO; the job queue leaves deduplication to the app's ids."""
    problems = []
    queues = resources(t, "AWS::SQS::Queue")
    if len(queues) < 2:
        problems.append(f"expected a job queue and a dead-letter queue, found {sorted(queues)}")
    for name, q in queues.items():
        if props(q).get("FifoQueue") is not True:
            problems.append(f"{name}: FifoQueue must be true")
        if not (props(q).get("KmsMasterKeyId") or props(q).get("SqsManagedSseEnabled") is True):
            problems.append(f"{name}: no server-side encryption")
    for _, queue, _ in sqs_consumers(t):
        if queue in queues and props(queues[queue]).get("ContentBasedDeduplication") is not False:
            problems.append(f"{queue}: ContentBasedDeduplication must be false (the app sets dedup ids)")
    return problems


def check_table(t: dict) -> list[str]:
    """State table: pk/sk strings, on demand, PITR, SSE with KMS, deletion protection."""
    problems = []
    tables = resources(t, "AWS::DynamoDB::Table")
    if len(tables) != 1:
        return [f"expected one DynamoDB table, found {sorted(tables)}"]
    name, table = next(iter(tables.items()))
    p = props(table)
    if (p.get("PointInTimeRecoverySpecification") or {}).get("PointInTimeRecoveryEnabled") is not True:
        problems.append(f"{name}: point-in-time recovery is not enabled")
    sse = p.get("SSESpecification") or {}
    if sse.get("SSEEnabled") is not True or sse.get("SSEType") != "KMS":
        problems.append(f"{name}: SSE with KMS is not enabled")
    if p.get("BillingMode") != "PAY_PER_REQUEST":
        problems.append(f"{name}: BillingMode must be PAY_PER_REQUEST")
    if p.get("DeletionProtectionEnabled") is not True:
        problems.append(f"{name}: deletion protection is off")
    keys = {(k.get("AttributeName"), k.get("KeyType")) for k in p.get("KeySchema") or []}
    if keys != {("pk", "HASH"), ("sk", "RANGE")}:
        problems.append(f"{name}: key schema must be pk (HASH) + sk (RANGE), got {sorted(keys)}")
    attrs = {(a.get("AttributeName"), a.get("AttributeType")) for a in p.get("AttributeDefinitions") or []}
    if attrs != {("pk", "S"), ("sk", "S")}:
        problems.append(f"{name}: pk and sk must be strings, got {sorted(attrs)}")
    return problems


EXPECTED_ROUTES = {("POST", "/api/notifications"), ("POST", "/api/lifecycle")}


def check_http_routes(t: dict) -> list[str]:
    """The HTTP API has exactly the two routes Graph posts to, both on this template's API."""
    problems = []
    apis = resources(t, "AWS::Serverless::HttpApi")
    if len(apis) != 1:
        return [f"expected one AWS::Serverless::HttpApi, found {sorted(apis)}"]
    api_name, api = next(iter(apis.items()))
    if "DefinitionBody" in props(api) or "DefinitionUri" in props(api):
        problems.append(f"{api_name}: routes must come from function events, not an OpenAPI definition")
    routes = []
    for name, fn in functions(t).items():
        if events(fn, "Api"):
            problems.append(f"{name}: REST Api events are not expected")
        for ev_name, ev in events(fn, "HttpApi").items():
            p = ev.get("Properties") or {}
            if ref_target(p.get("ApiId")) != api_name:
                problems.append(f"{name}.{ev_name}: not attached to {api_name} (implicit API?)")
            routes.append((str(p.get("Method", "")).upper(), p.get("Path")))
    if sorted(routes) != sorted(EXPECTED_ROUTES):
        problems.append(f"routes must be exactly {sorted(EXPECTED_ROUTES)}, got {sorted(routes)}")
    for name in resources(t, "AWS::ApiGatewayV2::Route"):
        problems.append(f"{name}: extra ApiGatewayV2 route")
    return problems


def env_variables(t: dict) -> dict[str, dict]:
    return {
        name: ((props(fn).get("Environment") or {}).get("Variables") or {})
        for name, fn in functions(t).items()
    }


def check_secret_env(t: dict) -> list[str]:
    """Secrets reach functions as ARNs (Ref to a secret of this template, or to a parameter
    that only takes a Secrets Manager ARN), never as values, and every variable follows
    SHADOWSYNC_<SECTION>_<KEY> (or RUST_LOG)."""
    problems = []
    secrets = set(resources(t, "AWS::SecretsManager::Secret")) | {
        name
        for name, p in t.get("Parameters", {}).items()
        if ":secretsmanager:" in p.get("AllowedPattern", "")
    }
    for fn, variables in env_variables(t).items():
        for key, value in variables.items():
            if not re.fullmatch(r"SHADOWSYNC_[A-Z0-9_]+|RUST_LOG", key):
                problems.append(f"{fn}: {key} does not follow SHADOWSYNC_<SECTION>_<KEY>")
            if re.search(r"SECRET|PASSWORD|CLIENT_STATE|TOKEN", key) and not key.endswith("_SECRET_ARN"):
                problems.append(f"{fn}: {key} looks like a secret value; pass a *_SECRET_ARN")
            if key.endswith("_SECRET_ARN"):
                branches = value["Fn::If"][1:] if isinstance(value, dict) and "Fn::If" in value else [value]
                for branch in branches:
                    if branch == {"Ref": "AWS::NoValue"}:
                        continue
                    if ref_target(branch) not in secrets:
                        problems.append(f"{fn}: {key} must be a Ref to a secret of this template")
    return problems


def _alarm_actions() -> dict:
    return {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}


def check_alarm_destination(t: dict) -> list[str]:
    """Alarms tell someone unless the operator opted out in so many words: AlarmTopicArn has no
    default (CloudFormation refuses a stack without a value), its pattern refuses the empty
    string and takes an SNS topic or `none`, and every alarm notifies the topic unless `none`."""
    problems = []
    param = (t.get("Parameters") or {}).get("AlarmTopicArn")
    if not isinstance(param, dict):
        return ["no AlarmTopicArn parameter"]
    if "Default" in param:
        problems.append(f"AlarmTopicArn has a default ({param['Default']!r}): a stack could tell nobody unasked")
    pattern = re.compile(param.get("AllowedPattern", ""))
    if pattern.fullmatch(""):
        problems.append("AlarmTopicArn's AllowedPattern accepts the empty string")
    for good in ["none", "arn:aws:sns:eu-west-1:123456789012:shadowsync-alarms"]:
        if not pattern.fullmatch(good):
            problems.append(f"AlarmTopicArn's AllowedPattern refuses {good!r}")
    condition = (t.get("Conditions") or {}).get("HasAlarmTopic")
    if condition != {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmTopicArn"}, "none"]}]}:
        problems.append(f"HasAlarmTopic must be: AlarmTopicArn is not none; got {condition!r}")
    alarms = resources(t, "AWS::CloudWatch::Alarm")
    if not alarms:
        problems.append("no alarms")
    for name, alarm in sorted(alarms.items()):
        if props(alarm).get("AlarmActions") != _alarm_actions():
            problems.append(f"{name}: AlarmActions must notify AlarmTopicArn (if HasAlarmTopic)")
    return problems


#: Assumed by IAM Roles Anywhere on behalf of a certificate; the subject's CN as a session tag.
SUBJECT_CN_KEY = "aws:PrincipalTag/x509Subject/CN"


def check_connector_trust(t: dict) -> list[str]:
    """The connector role trusts one certificate and one role, not a whole CA nor any principal:
    the Roles Anywhere statement is conditioned on the trust anchor and on the certificate's
    subject CN (a parameter that connector mode with a trust anchor requires), and
    ConnectorPrincipalArn takes only IAM role ARNs."""
    problems = []
    params = t.get("Parameters") or {}
    role = resources(t, "AWS::IAM::Role").get("ConnectorRole")
    if role is None:
        return ["no ConnectorRole"]
    trust = [
        branch
        for st in _statements(props(role).get("AssumeRolePolicyDocument"))
        for branch in (st["Fn::If"][1:2] if "Fn::If" in st else [st])
        if isinstance(branch, dict) and (branch.get("Principal") or {}).get("Service") == "rolesanywhere.amazonaws.com"
    ]
    if len(trust) != 1:
        return [f"expected one IAM Roles Anywhere trust statement, found {len(trust)}"]
    condition = trust[0].get("Condition") or {}
    if (condition.get("ArnEquals") or {}).get("aws:SourceArn") != {"Ref": "ConnectorTrustAnchorArn"}:
        problems.append("Roles Anywhere trust: aws:SourceArn must equal ConnectorTrustAnchorArn")
    if (condition.get("StringEquals") or {}).get(SUBJECT_CN_KEY) != {"Ref": "ConnectorCertificateSubjectCN"}:
        problems.append(
            f"Roles Anywhere trust: {SUBJECT_CN_KEY} must equal ConnectorCertificateSubjectCN "
            "(else any certificate of the CA assumes the role)"
        )
    cn = params.get("ConnectorCertificateSubjectCN")
    if not isinstance(cn, dict):
        problems.append("no ConnectorCertificateSubjectCN parameter")
    else:
        required = {"Fn::Or": [
            {"Fn::Equals": [{"Ref": "ConnectorTrustAnchorArn"}, ""]},
            {"Fn::Not": [{"Fn::Equals": [{"Ref": "ConnectorCertificateSubjectCN"}, ""]}]},
        ]}
        rule = (t.get("Rules") or {}).get("ConnectorModeNeedsAPrincipal") or {}
        if rule.get("RuleCondition") != {"Fn::Equals": [{"Ref": "DeploymentMode"}, "connector"]} or not any(
            a.get("Assert") == required for a in rule.get("Assertions") or []
        ):
            problems.append("connector mode with a trust anchor must require ConnectorCertificateSubjectCN")
    principal = re.compile((params.get("ConnectorPrincipalArn") or {}).get("AllowedPattern", ""))
    for good in ["", "arn:aws:iam::123456789012:role/shadowsync-connector",
                 "arn:aws-us-gov:iam::123456789012:role/ops/connector"]:
        if not principal.fullmatch(good):
            problems.append(f"ConnectorPrincipalArn's AllowedPattern refuses the role {good!r}")
    for bad in ["arn:aws:iam::123456789012:user/alice", "arn:aws:iam::123456789012:root",
                "arn:aws:sts::123456789012:assumed-role/r/session", "*", "123456789012",
                "arn:aws:iam::123456789012:role/"]:
        if principal.fullmatch(bad):
            problems.append(f"ConnectorPrincipalArn's AllowedPattern accepts {bad!r}, not an IAM role")
    return problems

"""Tests of infra/template.yaml for what cfn-lint and checkov do not catch.

Each check runs on the real template (must pass) and on deliberately broken copies (must fail),
so a check that cannot fail would be noticed. Run with `tests/infra/check.sh`, or plain
`pytest tests/infra` in an environment with pyyaml (cfn-lint / checkov tests skip without them).
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import cfn_checks as cc

TEXT = cc.TEMPLATE.read_text(encoding="utf-8")


@pytest.fixture()
def t() -> dict:
    # A fresh parse per test: tests mutate their copy.
    return cc.load_text(TEXT)


def fn_props(t: dict, name: str) -> dict:
    return t["Resources"][name]["Properties"]


# --------------------------------------------------------------------------------------------
# The loader
# --------------------------------------------------------------------------------------------
def test_loader_expands_short_tags():
    doc = cc.load_text(
        "a: !Ref X\nb: !GetAtt Q.Arn\nc: !Sub 'x-${Y}'\nd: !If [C, 1, !Ref AWS::NoValue]\n"
        "e: !Not [!Equals [!Ref P, '']]\nf: !Condition Cond\ng: !Split [',', !Ref S]\n"
    )
    assert doc["a"] == {"Ref": "X"}
    assert doc["b"] == {"Fn::GetAtt": ["Q", "Arn"]}
    assert doc["c"] == {"Fn::Sub": "x-${Y}"}
    assert doc["d"] == {"Fn::If": ["C", 1, {"Ref": "AWS::NoValue"}]}
    assert doc["e"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "P"}, ""]}]}
    assert doc["f"] == {"Condition": "Cond"}
    assert doc["g"] == {"Fn::Split": [",", {"Ref": "S"}]}


def test_template_parses_with_the_expected_shape(t):
    assert t["Transform"] == "AWS::Serverless-2016-10-31"
    assert set(cc.functions(t)) == {
        "WebhookFunction",
        "ProvisionerFunction",
        "SubscriptionsFunction",
        "ReconcilerFunction",
    }


# --------------------------------------------------------------------------------------------
# Every check passes on the real template
# --------------------------------------------------------------------------------------------
ALL_CHECKS = [
    cc.check_visibility_timeout,
    cc.check_dlq_redrive,
    cc.check_report_batch_item_failures,
    cc.check_schedules,
    cc.check_webhook_timeout,
    cc.check_own_roles,
    cc.check_no_wildcards,
    cc.check_fifo_queues,
    cc.check_table,
    cc.check_http_routes,
    cc.check_secret_env,
    cc.check_alarm_destination,
    cc.check_connector_trust,
]


@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__)
def test_check_passes_on_template(t, check):
    assert check(t) == []


# --------------------------------------------------------------------------------------------
# ... and fails on broken copies
# --------------------------------------------------------------------------------------------
def test_visibility_timeout_below_six_times_timeout_fails(t):
    fn_props(t, "ProvisionerFunction")["Timeout"] = 61  # 6 x 61 = 366 > 360
    assert cc.check_visibility_timeout(t)
    t2 = cc.load_text(TEXT)
    fn_props(t2, "JobQueue")["VisibilityTimeout"] = 60
    assert any("JobQueue" in p for p in cc.check_visibility_timeout(t2))


def test_visibility_check_uses_globals_timeout_when_function_has_none(t):
    del fn_props(t, "ProvisionerFunction")["Timeout"]
    t["Globals"]["Function"]["Timeout"] = 120
    assert cc.check_visibility_timeout(t)


def test_provisioner_timeout_is_what_the_queue_comment_says(t):
    # The queue's comment promises 6 x 60; keep the numbers honest.
    assert fn_props(t, "ProvisionerFunction")["Timeout"] == 60
    assert fn_props(t, "JobQueue")["VisibilityTimeout"] >= 360


@pytest.mark.parametrize("bad", [0, -1, "0", None])
def test_dlq_max_receive_count_below_one_fails(t, bad):
    redrive = fn_props(t, "JobQueue")["RedrivePolicy"]
    if bad is None:
        del redrive["maxReceiveCount"]
    else:
        redrive["maxReceiveCount"] = bad
    assert cc.check_dlq_redrive(t)


def test_dlq_parameter_default_zero_or_no_minimum_fails(t):
    t["Parameters"]["MaxReceiveCount"]["Default"] = 0
    assert cc.check_dlq_redrive(t)
    t2 = cc.load_text(TEXT)
    del t2["Parameters"]["MaxReceiveCount"]["MinValue"]
    assert cc.check_dlq_redrive(t2)


def test_missing_redrive_policy_fails(t):
    del fn_props(t, "JobQueue")["RedrivePolicy"]
    assert cc.check_dlq_redrive(t)


def test_dlq_is_a_backstop_behind_six_hours_of_retries(t):
    # Retries are bounded by a job's age (6 h); 100 deliveries at the 5-minute backoff cap
    # cover that, where 8 would dead-letter every job of a 4-minute outage.
    assert t["Parameters"]["MaxReceiveCount"]["Default"] == 100
    env = fn_props(t, "ProvisionerFunction")["Environment"]["Variables"]
    assert env["SHADOWSYNC_PROVISIONER_MAX_ATTEMPTS"] == {"Ref": "MaxReceiveCount"}


def test_the_provisioner_gets_the_accidental_change_threshold(t):
    env = fn_props(t, "ProvisionerFunction")["Environment"]["Variables"]
    assert env["SHADOWSYNC_SAFETY_MAX_DISABLES_PER_HOUR"] == {"Ref": "SafetyMaxDisablesPerHour"}
    assert env["SHADOWSYNC_SAFETY_MAX_DELETES_PER_HOUR"] == {"Ref": "SafetyMaxDeletesPerHour"}
    for name in ["SafetyMaxDisablesPerHour", "SafetyMaxDeletesPerHour"]:
        p = t["Parameters"][name]
        assert (p["Default"], p["MinValue"], p["MaxValue"]) == (100, 0, 100000)


@pytest.mark.parametrize(
    "bogus",
    [
        ["ReportBatchItemFailure"],
        ["reportBatchItemFailures"],
        ["ReportBatchItemFailures", "Bogus"],
        [],
        "ReportBatchItemFailures",
        None,
    ],
)
def test_bogus_function_response_types_fail(t, bogus):
    sqs = fn_props(t, "ProvisionerFunction")["Events"]["Jobs"]["Properties"]
    if bogus is None:
        del sqs["FunctionResponseTypes"]
    else:
        sqs["FunctionResponseTypes"] = bogus
    assert cc.check_report_batch_item_failures(t)


def test_bogus_function_response_types_fail_from_text():
    """The same, on a broken copy of the template's text (what a typo in review looks like)."""
    good = "FunctionResponseTypes: [ReportBatchItemFailures]"
    assert TEXT.count(good) == 1
    broken = cc.load_text(TEXT.replace(good, "FunctionResponseTypes: [ReportBatchItemFailure]"))
    assert cc.check_report_batch_item_failures(broken)


def test_batch_size_above_ten_fails(t):
    fn_props(t, "ProvisionerFunction")["Events"]["Jobs"]["Properties"]["BatchSize"] = 11
    assert cc.check_report_batch_item_failures(t)


@pytest.mark.parametrize(
    "expr",
    [
        "rate(1 minute)",
        "rate(15 minutes)",
        "rate(1 hour)",
        "rate(12 hours)",
        "rate(1 day)",
        "cron(0/15 * * * ? *)",
        "cron(0 3 ? * MON-FRI *)",
        "cron(30 2 1 * ? 2030)",
    ],
)
def test_valid_schedule_expressions(expr):
    assert cc.schedule_problem(expr) is None


@pytest.mark.parametrize(
    "expr",
    [
        "rate(15 minute)",
        "rate(1 minutes)",
        "rate(0 minutes)",
        "rate(15minutes)",
        "rate(-5 minutes)",
        "rate(5 seconds)",
        "rate (5 minutes)",
        "cron(0/15 * * * *)",
        "cron(0 3 * * * *)",
        "cron(0 3 ? * ? *)",
        "every 15 minutes",
        "",
    ],
)
def test_invalid_schedule_expressions(expr):
    assert cc.schedule_problem(expr) is not None


@pytest.mark.parametrize("param", ["SubscriptionsSchedule", "ReconcilerSchedule", "PartnersWatchSchedule"])
def test_broken_schedule_default_fails(t, param):
    t["Parameters"][param]["Default"] = "rate(15 minute)"
    assert cc.check_schedules(t)


@pytest.mark.parametrize("param", ["SubscriptionsSchedule", "ReconcilerSchedule", "PartnersWatchSchedule"])
def test_schedule_parameter_pattern_agrees_with_the_checker(t, param):
    """CloudFormation enforces AllowedPattern at deploy time: it must refuse what the checker
    refuses (the pattern is a simple subset of Java regex, same in Python)."""
    pattern = re.compile(t["Parameters"][param]["AllowedPattern"])
    for good in ["rate(1 minute)", "rate(15 minutes)", "rate(2 hours)", "cron(0/15 * * * ? *)"]:
        assert pattern.fullmatch(good), good
    for bad in ["rate(15 minute)", "rate(1 minutes)", "rate(0 minutes)", "rate(5 seconds)",
                "cron(0/15 * * * *)", "every 15 minutes"]:
        assert not pattern.fullmatch(bad), bad


def test_schedule_defaults(t):
    assert t["Parameters"]["ReconcilerSchedule"]["Default"] == "rate(15 minutes)"
    assert t["Parameters"]["SubscriptionsSchedule"]["Default"] == "rate(1 hour)"
    assert t["Parameters"]["PartnersWatchSchedule"]["Default"] == "rate(1 minute)"
    assert len(cc.schedule_expressions(t)) == 3


def test_the_partner_watcher_runs_only_in_lambda_mode_with_partners_configured(t):
    """The reconciler's second schedule asks it for a watcher round; off (DISABLED, no
    [partners] in the environment) unless lambda mode has a partner mode."""
    watch = t["Resources"]["ReconcilerFunction"]["Properties"]["Events"]["PartnerWatch"]["Properties"]
    assert watch["Input"] == '{"watch":"partners"}'
    assert watch["State"] == {"Fn::If": ["WatchPartners", "ENABLED", "DISABLED"]}
    assert t["Conditions"]["WatchPartners"] == {
        "Fn::And": [{"Condition": "LambdaMode"}, {"Condition": "HasPartners"}]
    }
    assert t["Parameters"]["PartnersMode"]["Default"] == ""
    for fn in ["ReconcilerFunction", "ProvisionerFunction"]:
        env = fn_props(t, fn)["Environment"]["Variables"]
        assert env["SHADOWSYNC_PARTNERS_MODE"]["Fn::If"][0] == "WatchPartners", fn
        for key in ["OUS", "FILTER", "UPN_SUFFIXES"]:
            condition = env[f"SHADOWSYNC_PARTNERS_{key}"]["Fn::If"][0]
            assert t["Conditions"][condition]["Fn::And"][0] == {"Condition": "WatchPartners"}, key


def test_slow_webhook_fails(t):
    fn_props(t, "WebhookFunction")["Timeout"] = 11
    assert cc.check_webhook_timeout(t)
    t2 = cc.load_text(TEXT)
    del fn_props(t2, "WebhookFunction")["Timeout"]
    t2["Globals"]["Function"]["Timeout"] = 30
    assert cc.check_webhook_timeout(t2)


def test_shared_role_fails(t):
    fn_props(t, "SubscriptionsFunction")["Role"] = {"Fn::GetAtt": ["WebhookRole", "Arn"]}
    problems = cc.check_own_roles(t)
    assert any("shared" in p for p in problems), problems


def test_role_from_outside_or_globals_fails(t):
    fn_props(t, "WebhookFunction")["Role"] = "arn:aws:iam::123456789012:role/everything"
    assert cc.check_own_roles(t)
    t2 = cc.load_text(TEXT)
    t2["Globals"]["Function"]["Role"] = {"Fn::GetAtt": ["WebhookRole", "Arn"]}
    assert cc.check_own_roles(t2)


def test_wildcard_resource_fails(t):
    stmts = fn_props(t, "WebhookRole")["Policies"][0]["PolicyDocument"]["Statement"]
    stmts.append({"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": "*"})
    assert cc.check_no_wildcards(t)
    t2 = cc.load_text(TEXT)
    stmts = fn_props(t2, "ConnectorPolicy")["PolicyDocument"]["Statement"]
    stmts[0]["Action"] = "sqs:*"
    assert cc.check_no_wildcards(t2)


@pytest.mark.parametrize("queue", ["JobQueue", "DeadLetterQueue"])
def test_standard_queue_fails(t, queue):
    del fn_props(t, queue)["FifoQueue"]
    assert cc.check_fifo_queues(t)


def test_content_based_dedup_or_no_encryption_fails(t):
    fn_props(t, "JobQueue")["ContentBasedDeduplication"] = True
    assert cc.check_fifo_queues(t)
    t2 = cc.load_text(TEXT)
    del fn_props(t2, "DeadLetterQueue")["KmsMasterKeyId"]
    assert cc.check_fifo_queues(t2)


@pytest.mark.parametrize(
    "breakage",
    [
        lambda p: p["PointInTimeRecoverySpecification"].update(PointInTimeRecoveryEnabled=False),
        lambda p: p.pop("PointInTimeRecoverySpecification"),
        lambda p: p["SSESpecification"].update(SSEEnabled=False),
        lambda p: p.pop("SSESpecification"),
        lambda p: p.update(BillingMode="PROVISIONED"),
        lambda p: p.update(DeletionProtectionEnabled=False),
        lambda p: p["KeySchema"].pop(),
        lambda p: p["AttributeDefinitions"][1].update(AttributeType="N"),
    ],
)
def test_table_breakages_fail(t, breakage):
    breakage(fn_props(t, "StateTable"))
    assert cc.check_table(t)


@pytest.mark.parametrize(
    "breakage",
    [
        lambda ev: ev["Notifications"]["Properties"].update(Path="/api/notification"),
        lambda ev: ev["Lifecycle"]["Properties"].update(Method="GET"),
        lambda ev: ev.pop("Lifecycle"),
        lambda ev: ev.update(
            Extra={"Type": "HttpApi", "Properties": {"ApiId": {"Ref": "WebhookApi"}, "Method": "POST", "Path": "/api/extra"}}
        ),
        lambda ev: ev["Notifications"]["Properties"].pop("ApiId"),
    ],
)
def test_route_breakages_fail(t, breakage):
    breakage(fn_props(t, "WebhookFunction")["Events"])
    assert cc.check_http_routes(t)


def test_secret_value_in_environment_fails(t):
    env = fn_props(t, "WebhookFunction")["Environment"]["Variables"]
    env["SHADOWSYNC_WEBHOOK_CLIENT_STATE"] = "hunter2"
    assert cc.check_secret_env(t)
    t2 = cc.load_text(TEXT)
    env = fn_props(t2, "ProvisionerFunction")["Environment"]["Variables"]
    env["SHADOWSYNC_DIRECTORY_BIND_PASSWORD_SECRET_ARN"] = "arn:aws:secretsmanager:eu-west-1:1:secret:x"
    assert cc.check_secret_env(t2)


# --------------------------------------------------------------------------------------------
# Structure the brief asks for, beyond the lintable
# --------------------------------------------------------------------------------------------
def test_code_uris_and_runtime(t):
    g = t["Globals"]["Function"]
    assert g["Runtime"] == "provided.al2023"
    assert g["Handler"] == "bootstrap"
    assert g["Architectures"] == [{"Ref": "Architecture"}]
    assert t["Parameters"]["Architecture"]["Default"] == "x86_64"
    assert set(t["Parameters"]["Architecture"]["AllowedValues"]) == {"x86_64", "arm64"}
    for name, binary in [
        ("WebhookFunction", "shadowsync-webhook"),
        ("ProvisionerFunction", "shadowsync-provisioner"),
        ("SubscriptionsFunction", "shadowsync-subscriptions"),
        ("ReconcilerFunction", "shadowsync-reconciler"),
    ]:
        assert fn_props(t, name)["CodeUri"] == f"../target/lambda/{binary}/"
    # The binaries exist as Cargo packages of those names.
    for binary in ["webhook", "provisioner", "subscriptions", "reconciler"]:
        manifest = (cc.REPO / "functions" / binary / "Cargo.toml").read_text()
        assert f'name = "shadowsync-{binary}"' in manifest


def test_connector_mode_drops_provisioner_and_creates_connector_role(t):
    assert t["Resources"]["ProvisionerFunction"]["Condition"] == "LambdaMode"
    assert t["Resources"]["ProvisionerRole"]["Condition"] == "LambdaMode"
    for name in ["ConnectorRole", "ConnectorPolicy"]:
        assert t["Resources"][name]["Condition"] == "ConnectorMode"
    stmts = fn_props(t, "ConnectorPolicy")["PolicyDocument"]["Statement"]
    actions = {a for s in stmts for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])}
    assert {a for a in actions if a.startswith("sqs:")} == {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:SendMessage",
        "sqs:GetQueueAttributes",
    }
    # Sends to the DLQ (dead letters with their reason) and to the job queue (its sweep of the
    # managed OUs enqueues converge jobs), to nothing else.
    send = [s for s in stmts if "sqs:SendMessage" in s["Action"]]
    assert sorted(cc.ref_target(s["Resource"]) for s in send) == ["DeadLetterQueue", "JobQueue"]
    # Every resource in the policy is one of this stack's.
    for s in stmts:
        for r in s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]:
            assert cc.ref_target(r) in t["Resources"], r


def test_vpc_only_for_ad_functions(t):
    assert "VpcConfig" in fn_props(t, "ProvisionerFunction")
    assert fn_props(t, "ReconcilerFunction")["VpcConfig"]["Fn::If"][0] == "AttachToVpc"
    for name in ["WebhookFunction", "SubscriptionsFunction"]:
        assert "VpcConfig" not in fn_props(t, name)
    vpc_policy = "AWSLambdaVPCAccessExecutionRole"
    for role in ["WebhookRole", "SubscriptionsRole"]:
        assert vpc_policy not in str(fn_props(t, role).get("ManagedPolicyArns"))
    assert vpc_policy in str(fn_props(t, "ProvisionerRole")["ManagedPolicyArns"])
    reconciler = fn_props(t, "ReconcilerRole")["ManagedPolicyArns"]
    assert [p["Fn::If"][0] for p in reconciler if vpc_policy in str(p)] == ["AttachToVpc"]


def test_alarms_cover_dlq_and_every_function(t):
    alarms = cc.resources(t, "AWS::CloudWatch::Alarm")
    covered = set()
    for a in alarms.values():
        p = a["Properties"]
        for d in p.get("Dimensions", []):
            covered.add((p["MetricName"], cc.ref_target(d["Value"])))
    assert ("ApproximateNumberOfMessagesVisible", "DeadLetterQueue") in covered
    for fn in cc.functions(t):
        assert ("Errors", fn) in covered, fn
        assert ("Throttles", fn) in covered, fn
    dlq = next(a["Properties"] for a in alarms.values()
               if a["Properties"]["MetricName"] == "ApproximateNumberOfMessagesVisible")
    assert dlq["Threshold"] == 0 and dlq["ComparisonOperator"] == "GreaterThanThreshold"


def alarms_in(t: dict, mode: str) -> list[str]:
    """The alarms a stack in this DeploymentMode has."""
    wanted = {"lambda": "LambdaMode", "connector": "ConnectorMode"}[mode]
    return sorted(
        name
        for name, alarm in cc.resources(t, "AWS::CloudWatch::Alarm").items()
        if alarm.get("Condition") in (None, wanted)
    )


def test_alarm_count_per_mode(t):
    # README's running costs count them ($0.10 a month each): update it with these numbers.
    assert len(alarms_in(t, "lambda")) == 14, alarms_in(t, "lambda")
    assert len(alarms_in(t, "connector")) == 9, alarms_in(t, "connector")


def test_changes_held_alarm_is_the_graph_refusal_alarm_on_its_own_metric(t):
    alarms = cc.resources(t, "AWS::CloudWatch::Alarm")
    held, refused = alarms["ChangesHeldAlarm"], alarms["GraphAccessRefusedAlarm"]
    assert held["Condition"] == refused["Condition"]
    assert held["Properties"]["MetricName"] == "ChangesHeld"
    assert held["Properties"]["AlarmDescription"] == (
        "shadowsync's accidental-change threshold holds disables or deletes until an "
        "administrator runs `shadowsync held list` and then `held release` or `held discard`."
    )
    same = {k: v for k, v in held["Properties"].items() if k not in ("MetricName", "AlarmDescription")}
    assert same == {k: v for k, v in refused["Properties"].items() if k not in ("MetricName", "AlarmDescription")}


def test_conflicts_alarm_watches_the_provisioners_conflicts(t):
    alarms = cc.resources(t, "AWS::CloudWatch::Alarm")
    conflicts, held = alarms["ConflictsAlarm"], alarms["ChangesHeldAlarm"]
    assert conflicts["Properties"]["MetricName"] == "Conflicts"
    assert conflicts["Condition"] == held["Condition"]
    same = lambda a: {k: v for k, v in a["Properties"].items() if k not in ("MetricName", "AlarmDescription")}
    assert same(conflicts) == same(held)


def test_notifications_rejected_alarm_watches_the_webhooks_client_state_refusals(t):
    p = cc.resources(t, "AWS::CloudWatch::Alarm")["NotificationsRejectedAlarm"]["Properties"]
    assert (p["Namespace"], p["MetricName"]) == ("shadowsync", "RejectedBadClientState")
    assert p["Dimensions"] == [{"Name": "Function", "Value": "webhook"}]
    assert (p["Threshold"], p["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    assert "Condition" not in cc.resources(t)["NotificationsRejectedAlarm"], "the webhook runs in both modes"


def test_every_shadowsync_metric_an_alarm_watches_is_published(t):
    """A misspelt metric name is an alarm that never fires: each must be a counter's published
    name somewhere in the Rust sources."""
    sources = "\n".join(
        p.read_text(encoding="utf-8")
        for root in ("shared", "functions")
        for p in (cc.REPO / root).glob("*/src/**/*.rs")
    )
    for name, alarm in sorted(cc.resources(t, "AWS::CloudWatch::Alarm").items()):
        p = alarm["Properties"]
        if p.get("Namespace") != "shadowsync":
            continue
        assert f'"{p["MetricName"]}"' in sources, (name, p["MetricName"])


def test_no_alarm_destination_fails(t):
    t["Parameters"]["AlarmTopicArn"]["Default"] = ""
    assert cc.check_alarm_destination(t)
    t2 = cc.load_text(TEXT)
    t2["Parameters"]["AlarmTopicArn"]["AllowedPattern"] = "^$|" + t2["Parameters"]["AlarmTopicArn"]["AllowedPattern"]
    assert cc.check_alarm_destination(t2)
    t3 = cc.load_text(TEXT)
    del cc.resources(t3)["ChangesHeldAlarm"]["Properties"]["AlarmActions"]
    assert any("ChangesHeldAlarm" in p for p in cc.check_alarm_destination(t3))


@pytest.mark.parametrize(
    "value, accepted",
    [("none", True), ("arn:aws:sns:eu-west-1:123456789012:alarms", True), ("", False), ("None", False)],
)
def test_alarm_topic_values(t, value, accepted):
    pattern = re.compile(t["Parameters"]["AlarmTopicArn"]["AllowedPattern"])
    assert bool(pattern.fullmatch(value)) == accepted


def test_roles_anywhere_trust_without_the_subject_fails(t):
    role = fn_props(t, "ConnectorRole")
    trust = role["AssumeRolePolicyDocument"]["Statement"][0]["Fn::If"][1]
    del trust["Condition"]["StringEquals"]
    assert cc.check_connector_trust(t)
    t2 = cc.load_text(TEXT)
    t2["Rules"]["ConnectorModeNeedsAPrincipal"]["Assertions"].pop()
    assert cc.check_connector_trust(t2)


@pytest.mark.parametrize(
    "value, accepted",
    [("", True), ("connector-01.corp.example.com", True), ("x", True), ("c" * 64, True),
     ("c" * 65, False), (" connector", False), ("connector ", False)],
)
def test_certificate_subject_cn_values(t, value, accepted):
    pattern = re.compile(t["Parameters"]["ConnectorCertificateSubjectCN"]["AllowedPattern"])
    assert bool(pattern.fullmatch(value)) == accepted


def test_any_principal_as_connector_fails(t):
    t["Parameters"]["ConnectorPrincipalArn"]["AllowedPattern"] = "^$|^arn:aws[a-z-]*:(iam|sts)::[0-9]{12}:.+$"
    assert cc.check_connector_trust(t)


def test_outputs(t):
    out = t["Outputs"]
    assert out["NotificationUrl"]["Value"] == {
        "Fn::Sub": "https://${WebhookApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/api/notifications"
    }
    assert cc.ref_target(out["JobQueueUrl"]["Value"]) == "JobQueue"
    assert cc.ref_target(out["DeadLetterQueueUrl"]["Value"]) == "DeadLetterQueue"
    assert cc.ref_target(out["StateTableName"]["Value"]) == "StateTable"


def test_log_groups_with_retention_for_every_function(t):
    groups = cc.resources(t, "AWS::Logs::LogGroup")
    for name, fn in cc.functions(t).items():
        group = cc.ref_target(fn["Properties"]["LoggingConfig"]["LogGroup"])
        assert group in groups, name
        assert groups[group]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def test_environment_comment_lists_every_variable(t):
    """The comment block at the top is the contract the Lambda mains are written against."""
    header = TEXT.split("\nMetadata:", 1)[0]
    documented = set(re.findall(r"^#\s+(SHADOWSYNC_[A-Z0-9_]+|RUST_LOG)\b", header, re.M))
    used = {k for env in cc.env_variables(t).values() for k in env}
    assert used == documented, (sorted(used - documented), sorted(documented - used))
    for must in ["SHADOWSYNC_QUEUE_URL", "SHADOWSYNC_DLQ_URL", "SHADOWSYNC_TABLE_NAME",
                 "SHADOWSYNC_GRAPH_TENANT_ID", "SHADOWSYNC_DIRECTORY_URL", "SHADOWSYNC_DIRECTORY_GUESTS_OU"]:
        assert must in used


# --------------------------------------------------------------------------------------------
# The linters themselves (check.sh runs them first and leaves their exit codes here)
# --------------------------------------------------------------------------------------------
RESULTS = os.environ.get("SHADOWSYNC_INFRA_RESULTS")


def _tool_result(tool: str, argv: list[str]) -> tuple[int, str]:
    if RESULTS:
        rc = int((Path(RESULTS) / f"{tool}.rc").read_text().strip())
        return rc, (Path(RESULTS) / f"{tool}.out").read_text(errors="replace")
    # Prefer the tool next to the running interpreter (the venv check.sh made), then PATH.
    beside = Path(sys.executable).parent / argv[0]
    exe = str(beside) if beside.exists() else shutil.which(argv[0])
    if exe is None:
        pytest.skip(f"{argv[0]} not installed (run tests/infra/check.sh)")
    proc = subprocess.run([exe, *argv[1:]], cwd=cc.REPO, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def test_cfn_lint_clean():
    rc, out = _tool_result("cfn-lint", ["cfn-lint", str(cc.TEMPLATE)])
    assert rc == 0, out


def test_checkov_clean():
    rc, out = _tool_result(
        "checkov",
        ["checkov", "-f", str(cc.TEMPLATE), "--framework", "cloudformation", "--skip-download", "--compact", "--quiet"],
    )
    assert rc == 0, out


def test_checkov_waivers_have_reasons(t):
    for name, res in t["Resources"].items():
        for skip in ((res.get("Metadata") or {}).get("checkov") or {}).get("skip", []):
            assert re.fullmatch(r"CKV2?_AWS_\d+", skip["id"]), (name, skip)
            assert len(skip.get("comment", "").split()) >= 8, (name, skip["id"], "reason too short")


def test_webhook_reaches_only_the_pending_partition_of_the_state_table(t):
    """The webhook marks waiting jobs in the state table (a redelivery folds into them); its
    role may touch that partition only, and the function is told the table."""
    stmts = fn_props(t, "WebhookRole")["Policies"][0]["PolicyDocument"]["Statement"]
    state = [s for s in stmts if "dynamodb" in str(s.get("Action"))]
    assert len(state) == 1, state
    (s,) = state
    assert sorted(s["Action"]) == ["dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem"]
    assert s["Resource"] == {"Fn::GetAtt": ["StateTable", "Arn"]}
    assert s["Condition"] == {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": ["pending"]}}
    env = fn_props(t, "WebhookFunction")["Environment"]["Variables"]
    assert env["SHADOWSYNC_TABLE_NAME"] == {"Ref": "StateTable"}

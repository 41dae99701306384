//! What the template sets, as the emulator created it, against what the code assumes.

mod common;

use std::time::Duration;

use common::stack;
use eventline_model::aws::{SDK_ATTEMPT_TIMEOUT, SDK_OPERATION_TIMEOUT};
use eventline_model::retry::MIN_ATTEMPT_TIME;

/// API Gateway's integration timeout for HTTP APIs.
const HTTP_API_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_timeouts_leave_room_for_every_retry_budget() {
    let stack = stack(&[]).await;
    let timeout = |name: &str| Duration::from_secs(stack.manifest.functions[name].timeout_seconds);

    for name in ["ingest", "metrics"] {
        assert!(timeout(name) < HTTP_API_TIMEOUT, "{name} must answer before API Gateway gives up");
        assert!(SDK_OPERATION_TIMEOUT < timeout(name) && SDK_ATTEMPT_TIMEOUT < SDK_OPERATION_TIMEOUT);
    }
    // Each retry loop starts no try after its budget and gives the last one at least
    // MIN_ATTEMPT_TIME beyond it.
    let ingest_worst = ingest::PUT_BUDGET + ingest::COUNT_BUDGET + 2 * MIN_ATTEMPT_TIME;
    assert!(ingest_worst < timeout("ingest"), "{ingest_worst:?} of retries in a {:?} function", timeout("ingest"));

    // One commit group can spend its whole budget (a failing group ends the batch), then
    // publishing and two rounds of dead-lettering.
    let transform_worst = transform::COMMIT_BUDGET
        + SDK_OPERATION_TIMEOUT
        + transform::PUBLISH_BUDGET
        + MIN_ATTEMPT_TIME
        + 2 * (transform::DEAD_LETTER_BUDGET + SDK_OPERATION_TIMEOUT);
    assert!(transform_worst < timeout("transform"), "{transform_worst:?} in a {:?} function", timeout("transform"));
}

/// The template as CloudFormation, as the SAM translator makes it for the emulator.
async fn translated() -> serde_json::Value {
    let script = "import json, sys\nsys.path.insert(0, 'tools/local')\nimport deploy_template\n\
        from samtranslator.yaml_helper import yaml_parse\n\
        print(json.dumps(deploy_template.translate(yaml_parse(open('template.yaml').read()), {})))";
    let output = tokio::process::Command::new(common::checkout().join(".venv/bin/python"))
        .args(["-c", script])
        .current_dir(common::checkout())
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()
        .await
        .expect("the venv's python");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test]
async fn throttling_log_retention_and_retained_state_are_in_the_translated_template() {
    let template = translated().await;
    let resources = template["Resources"].as_object().unwrap();
    let of_type = |kind: &'static str| resources.iter().filter(move |(_, r)| r["Type"] == kind);
    let reference = |name: &str| serde_json::json!({"Ref": name});

    let (_, stage) = of_type("AWS::ApiGatewayV2::Stage").next().expect("the HTTP API's stage");
    let settings = &stage["Properties"];
    assert_eq!(settings["DefaultRouteSettings"]["ThrottlingRateLimit"], reference("ApiThrottlingRateLimit"));
    assert_eq!(settings["DefaultRouteSettings"]["ThrottlingBurstLimit"], reference("ApiThrottlingBurstLimit"));
    for route in ["GET /health", "GET /healthz"] {
        assert_eq!(settings["RouteSettings"][route]["ThrottlingRateLimit"], reference("HealthThrottlingRateLimit"));
    }

    let functions: Vec<_> = of_type("AWS::Lambda::Function").collect();
    assert_eq!(functions.len(), 3);
    for (name, function) in functions {
        let logging = &function["Properties"]["LoggingConfig"];
        assert_eq!(logging["SystemLogLevel"], "INFO", "{name} keeps the REPORT lines");
        let group = logging["LogGroup"]["Ref"].as_str().unwrap_or_else(|| panic!("{name} has its own log group"));
        assert_eq!(resources[group]["Type"], "AWS::Logs::LogGroup");
        assert_eq!(resources[group]["Properties"]["RetentionInDays"], reference("LogRetentionDays"));
        assert_eq!(resources[group]["DeletionPolicy"], "Retain");
    }

    let (_, table) = of_type("AWS::DynamoDB::Table").next().unwrap();
    let protection = &table["Properties"]["DeletionProtectionEnabled"];
    assert_eq!(*protection, serde_json::json!({"Fn::If": ["ProtectTable", true, false]}));
    assert_eq!(
        template["Conditions"]["ProtectTable"],
        serde_json::json!({"Fn::Equals": [{"Ref": "TableDeletionProtection"}, "Enabled"]})
    );

    for (function, parameter) in
        [("IngestFunction", "IngestReservedConcurrency"), ("MetricsFunction", "MetricsReservedConcurrency")]
    {
        let reserved = &resources[function]["Properties"]["ReservedConcurrentExecutions"];
        assert_eq!(reserved["Fn::If"][1], reference(parameter), "{function}");
    }

    for kind in ["AWS::Kinesis::Stream", "AWS::SQS::Queue", "AWS::DynamoDB::Table"] {
        for (name, resource) in of_type(kind) {
            assert_eq!(resource["DeletionPolicy"], "Retain", "{name}");
            assert_eq!(resource["UpdateReplacePolicy"], "Retain", "{name}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_deploys_with_reserved_concurrency_and_without_deletion_protection() {
    let stack = stack(&[
        ("IngestReservedConcurrency", "5"),
        ("MetricsReservedConcurrency", "3"),
        ("TableDeletionProtection", "Disabled"),
    ])
    .await;
    let (status, body) = common::call(&stack, "GET", "/health", None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")), "{body}");
}

#[tokio::test]
async fn access_logs_scoped_roles_ceilings_failure_bucket_and_alarms_are_in_the_translated_template() {
    let template = translated().await;
    let resources = template["Resources"].as_object().unwrap();
    let of_type = |kind: &'static str| resources.iter().filter(move |(_, r)| r["Type"] == kind);
    let reference = |name: &str| serde_json::json!({"Ref": name});

    // Access logs as JSON with the fields an on-call engineer looks for first.
    let (_, stage) = of_type("AWS::ApiGatewayV2::Stage").next().unwrap();
    let access = &stage["Properties"]["AccessLogSettings"];
    assert_eq!(access["DestinationArn"], serde_json::json!({"Fn::GetAtt": ["ApiAccessLogs", "Arn"]}));
    let format: serde_json::Value =
        serde_json::from_str(access["Format"].as_str().unwrap()).expect("the access log format is JSON");
    for field in ["requestId", "ip", "routeKey", "status", "latencyMs", "integrationError"] {
        assert!(format.get(field).is_some(), "access logs carry {field}");
    }
    assert_eq!(resources["ApiAccessLogs"]["Properties"]["RetentionInDays"], reference("LogRetentionDays"));

    // Each function runs as its own role, which writes only to the function's log group.
    for (function, logs) in [
        ("IngestFunction", "IngestFunctionLogs"),
        ("TransformFunction", "TransformFunctionLogs"),
        ("MetricsFunction", "MetricsFunctionLogs"),
    ] {
        let role = resources[function]["Properties"]["Role"]["Fn::GetAtt"][0].as_str().unwrap();
        let role = &resources[role]["Properties"];
        assert!(role.get("ManagedPolicyArns").is_none(), "{function}: no managed policy writing every log group");
        let statements: Vec<&serde_json::Value> = role["Policies"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["PolicyDocument"]["Statement"].as_array().unwrap())
            .collect();
        let logging: Vec<_> = statements.iter().filter(|s| s["Action"].to_string().contains("logs:")).collect();
        assert_eq!(logging.len(), 1, "{function}");
        assert_eq!(logging[0]["Resource"], serde_json::json!({"Fn::GetAtt": [logs, "Arn"]}), "{function}");
        for statement in &statements {
            if statement["Resource"] == "*" {
                let actions = statement["Action"].to_string();
                assert!(
                    actions.contains("xray:") || actions.contains("kinesis:ListStreams"),
                    "{function}: only tracing and ListStreams take every resource: {statement}"
                );
            }
        }
    }

    // The on-demand table and its index have a ceiling.
    let table = &resources["EventsTable"]["Properties"];
    for ceiling in [&table["OnDemandThroughput"], &table["GlobalSecondaryIndexes"][0]["OnDemandThroughput"]] {
        assert_eq!(ceiling["MaxReadRequestUnits"], reference("TableMaxReadUnits"));
        assert_eq!(ceiling["MaxWriteRequestUnits"], reference("TableMaxWriteUnits"));
    }

    // Failed batches go to an encrypted, private bucket whose records expire.
    let (_, mapping) = of_type("AWS::Lambda::EventSourceMapping").next().unwrap();
    assert_eq!(
        mapping["Properties"]["DestinationConfig"]["OnFailure"]["Destination"],
        serde_json::json!({"Fn::GetAtt": ["StreamFailureBucket", "Arn"]})
    );
    let bucket = &resources["StreamFailureBucket"];
    assert_eq!(bucket["DeletionPolicy"], "Retain");
    let bucket = &bucket["Properties"];
    assert_eq!(
        bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]["SSEAlgorithm"],
        "AES256"
    );
    for setting in ["BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"] {
        assert_eq!(bucket["PublicAccessBlockConfiguration"][setting], true, "{setting}");
    }
    assert_eq!(bucket["LifecycleConfiguration"]["Rules"][0]["ExpirationInDays"], reference("FailureRetentionDays"));

    // An alarm on every signal the on-call engineer needs, each notifying the topic.
    let alarms: Vec<_> = of_type("AWS::CloudWatch::Alarm").map(|(_, a)| &a["Properties"]).collect();
    let watched: std::collections::BTreeSet<String> = alarms
        .iter()
        .map(|a| format!("{}/{}", a["Namespace"].as_str().unwrap(), a["MetricName"].as_str().unwrap()))
        .collect();
    for signal in [
        "AWS/Lambda/IteratorAge",
        "AWS/SQS/ApproximateNumberOfMessagesVisible",
        "AWS/S3/PutRequests",
        "AWS/Lambda/Errors",
        "AWS/Lambda/Throttles",
        "AWS/ApiGateway/5xx",
        "AWS/Kinesis/WriteProvisionedThroughputExceeded",
        "AWS/DynamoDB/WriteThrottleEvents",
        "AWS/DynamoDB/ReadThrottleEvents",
    ] {
        assert!(watched.contains(signal), "no alarm on {signal}: {watched:?}");
    }
    let topic = serde_json::json!({"Fn::If": ["CreateAlarmTopic", {"Ref": "AlarmTopic"}, {"Ref": "AlarmTopicArn"}]});
    for alarm in &alarms {
        assert_eq!(alarm["AlarmActions"], serde_json::json!([topic]), "{}", alarm["AlarmDescription"]);
    }
    let errors = alarms.iter().filter(|a| a["MetricName"] == "Errors").count();
    assert_eq!(errors, 3, "one error alarm per function");
    let (_, dashboard) = of_type("AWS::CloudWatch::Dashboard").next().expect("a dashboard");
    let body = dashboard["Properties"]["DashboardBody"]["Fn::Sub"].as_str().unwrap();
    assert!(body.contains("IteratorAge") && body.contains("EventsStored"), "the dashboard shows the same signals");
}

#[tokio::test]
async fn parameters_the_template_does_not_take_are_refused() {
    for (parameter, expected) in [
        (("IngestAuthorisation", "NONE"), "the template has no parameter IngestAuthorisation"),
        (("IngestAuthorization", "jwt"), "parameter IngestAuthorization must be one of IAM, JWT, NONE, not 'jwt'"),
        (("LogRetentionDays", "10"), "parameter LogRetentionDays must be one of 1, 3, 5"),
        (
            ("TransformMaxRecordAgeSeconds", "30"),
            "parameter TransformMaxRecordAgeSeconds must be at least 60, not '30'",
        ),
        (("TransformBatchSize", "ten"), "parameter TransformBatchSize must be a number, not 'ten'"),
        (("TransformBatchSize", "nan"), "parameter TransformBatchSize must be a number, not 'nan'"),
        (("Stage", "Prod"), "parameter Stage must match [a-z0-9-]{1,16}, not 'Prod'"),
    ] {
        let Err(error) = common::try_stack(&[parameter]).await else { panic!("a stack started with {parameter:?}") };
        assert!(error.to_string().contains(expected), "{error}");
    }
}

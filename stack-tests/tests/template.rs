//! What the template sets, as the emulator created it, against what the code assumes.

use eventline_stack_tests as common;

use std::time::Duration;

use common::stack;
use eventline_aws::{SDK_ATTEMPT_TIMEOUT, SDK_OPERATION_TIMEOUT};
use eventline_model::retry::MIN_ATTEMPT_TIME;

/// API Gateway's integration timeout for HTTP APIs.
const HTTP_API_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_timeouts_leave_room_for_every_retry_budget() {
    let stack = stack(&[]).await;
    let timeout = |name: &str| Duration::from_secs(stack.manifest.functions[name].timeout_seconds);

    for name in ["ingest", "query", "admin"] {
        assert!(timeout(name) < HTTP_API_TIMEOUT, "{name} must answer before API Gateway gives up");
        assert!(SDK_OPERATION_TIMEOUT < timeout(name) && SDK_ATTEMPT_TIMEOUT < SDK_OPERATION_TIMEOUT);
    }
    // Each retry loop starts no try after its budget and gives the last one at least
    // MIN_ATTEMPT_TIME beyond it.
    let ingest_worst = eventline_ingest::PUT_BUDGET + eventline_ingest::COUNT_BUDGET + 2 * MIN_ATTEMPT_TIME;
    assert!(ingest_worst < timeout("ingest"), "{ingest_worst:?} of retries in a {:?} function", timeout("ingest"));

    // One commit group can spend its whole budget (a failing group ends the batch), then
    // publishing and two rounds of dead-lettering.
    let transform_worst = eventline_transform::COMMIT_BUDGET
        + SDK_OPERATION_TIMEOUT
        + eventline_transform::PUBLISH_BUDGET
        + MIN_ATTEMPT_TIME
        + 2 * (eventline_transform::DEAD_LETTER_BUDGET + SDK_OPERATION_TIMEOUT);
    assert!(transform_worst < timeout("transform"), "{transform_worst:?} in a {:?} function", timeout("transform"));
}

/// The template as CloudFormation, as the SAM translator makes it for the emulator.
async fn translated() -> serde_json::Value {
    common::translated_template().await
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
    assert_eq!(functions.len(), 5, "ingest, transform, query, admin and the write-key authorizer");
    for (name, function) in functions {
        let logging = &function["Properties"]["LoggingConfig"];
        if *name == "IngestFunction" {
            // Once per request: its platform lines are a parameter, off by default.
            assert_eq!(logging["SystemLogLevel"], reference("IngestSystemLogLevel"));
            assert_eq!(template["Parameters"]["IngestSystemLogLevel"]["Default"], "WARN");
        } else {
            assert_eq!(logging["SystemLogLevel"], "INFO", "{name} keeps the REPORT lines");
        }
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
        [("IngestFunction", "IngestReservedConcurrency"), ("QueryFunction", "QueryReservedConcurrency")]
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
        ("QueryReservedConcurrency", "3"),
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
        ("QueryFunction", "QueryFunctionLogs"),
        ("AdminFunction", "AdminFunctionLogs"),
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
    assert_eq!(errors, 5, "one error alarm per function");

    // API Gateway may invoke the write-key authorizer, for this API's authorizers only (the
    // local gateway and sam local call it without asking).
    let invoke = of_type("AWS::Lambda::Permission")
        .map(|(_, p)| &p["Properties"])
        .find(|p| p["FunctionName"] == serde_json::json!({"Fn::GetAtt": ["AuthorizerFunction", "Arn"]}))
        .expect("a permission to invoke the write-key authorizer");
    assert_eq!(invoke["Principal"], "apigateway.amazonaws.com");
    assert!(invoke["SourceArn"].to_string().contains("/authorizers/*"), "{}", invoke["SourceArn"]);
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

#[tokio::test]
async fn the_alarm_topic_is_encrypted_with_a_key_cloudwatch_alarms_of_this_account_may_use() {
    let template = translated().await;
    let resources = &template["Resources"];
    let sub = |text: &str| serde_json::json!({"Fn::Sub": text});
    let this_account = serde_json::json!({
        "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
        "ArnLike": {"aws:SourceArn": sub("arn:${AWS::Partition}:cloudwatch:${AWS::Region}:${AWS::AccountId}:alarm:*")},
    });

    // A key of the stack's own, rotated, with an alias; the topic uses it, not alias/aws/sns,
    // whose policy no alarm can be granted.
    let topic = &resources["AlarmTopic"]["Properties"];
    assert_eq!(topic["KmsMasterKeyId"], serde_json::json!({"Ref": "AlarmTopicKeyAlias"}));
    let alias = &resources["AlarmTopicKeyAlias"];
    assert_eq!(alias["Type"], "AWS::KMS::Alias");
    assert_eq!(alias["Properties"]["TargetKeyId"], serde_json::json!({"Ref": "AlarmTopicKey"}));
    let key = &resources["AlarmTopicKey"];
    assert_eq!(key["Type"], "AWS::KMS::Key");
    assert_eq!(key["Properties"]["EnableKeyRotation"], true);
    let statements = key["Properties"]["KeyPolicy"]["Statement"].as_array().unwrap();
    let administers = statements
        .iter()
        .find(|s| s["Principal"]["AWS"] == sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:root"))
        .expect("the account administers the key");
    assert_eq!((&administers["Effect"], &administers["Action"]), (&"Allow".into(), &"kms:*".into()));
    let alarms: Vec<_> =
        statements.iter().filter(|s| s["Principal"]["Service"] == "cloudwatch.amazonaws.com").collect();
    assert_eq!(alarms.len(), 1, "one grant to CloudWatch");
    assert_eq!(alarms[0]["Effect"], "Allow");
    assert_eq!(alarms[0]["Action"], serde_json::json!(["kms:Decrypt", "kms:GenerateDataKey*"]));
    assert_eq!(alarms[0]["Condition"], this_account, "only this account's alarms");
    assert_eq!(statements.len(), 2, "nobody else: {statements:?}");

    // The topic takes alarms of this account, and nothing without TLS.
    let policy = &resources["AlarmTopicPolicy"];
    assert_eq!(policy["Type"], "AWS::SNS::TopicPolicy");
    assert_eq!(policy["Properties"]["Topics"], serde_json::json!([{"Ref": "AlarmTopic"}]));
    let statements = policy["Properties"]["PolicyDocument"]["Statement"].as_array().unwrap();
    let publish = statements.iter().find(|s| s["Effect"] == "Allow").expect("alarms may publish");
    assert_eq!(publish["Principal"], serde_json::json!({"Service": "cloudwatch.amazonaws.com"}));
    assert_eq!(publish["Action"], "sns:Publish");
    assert_eq!(publish["Resource"], serde_json::json!({"Ref": "AlarmTopic"}));
    assert_eq!(publish["Condition"], this_account);
    let deny = statements.iter().find(|s| s["Effect"] == "Deny").expect("requests without TLS are denied");
    assert_eq!((&deny["Principal"], &deny["Action"]), (&"*".into(), &"sns:*".into()));
    assert_eq!(deny["Condition"], serde_json::json!({"Bool": {"aws:SecureTransport": "false"}}));

    // All of it exists only when the stack makes its own topic; with AlarmTopicArn the alarms
    // notify that topic instead.
    for name in ["AlarmTopic", "AlarmTopicKey", "AlarmTopicKeyAlias", "AlarmTopicPolicy"] {
        assert_eq!(resources[name]["Condition"], "CreateAlarmTopic", "{name}");
    }
    assert_eq!(
        template["Conditions"]["CreateAlarmTopic"],
        serde_json::json!({"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]})
    );
}

#[tokio::test]
async fn the_transform_reserves_one_per_shard_by_default_a_set_number_or_none() {
    let template = translated().await;
    let reserved = &template["Resources"]["TransformFunction"]["Properties"]["ReservedConcurrentExecutions"];
    assert_eq!(
        *reserved,
        serde_json::json!({"Fn::If": ["ReserveTransformPerShard", {"Ref": "IngestShardCount"},
            {"Fn::If": ["ReserveTransform", {"Ref": "TransformReservedConcurrency"}, {"Ref": "AWS::NoValue"}]}]})
    );
    let conditions = &template["Conditions"];
    assert_eq!(
        conditions["ReserveTransformPerShard"],
        serde_json::json!({"Fn::Equals": [{"Ref": "TransformReservedConcurrency"}, -1]})
    );
    assert_eq!(
        conditions["ReserveTransform"],
        serde_json::json!({"Fn::Not": [{"Fn::Equals": [{"Ref": "TransformReservedConcurrency"}, 0]}]})
    );
    let parameter = &template["Parameters"]["TransformReservedConcurrency"];
    assert_eq!((&parameter["Default"], &parameter["MinValue"]), (&serde_json::json!(-1), &serde_json::json!(-1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_deploys_with_an_external_alarm_topic_and_each_transform_reservation() {
    for reservation in ["-1", "0", "4"] {
        let stack = stack(&[
            ("AlarmTopicArn", "arn:aws:sns:us-east-1:123456789012:on-call"),
            ("TransformReservedConcurrency", reservation),
            ("IngestShardCount", "2"),
        ])
        .await;
        assert_eq!(stack.manifest.outputs["AlarmTopicArn"], "arn:aws:sns:us-east-1:123456789012:on-call");
        let expected = match reservation {
            "-1" => Some(2),
            "0" => None,
            n => n.parse().ok(),
        };
        let reserved = stack.manifest.functions["transform"].reserved_concurrency;
        assert_eq!(reserved, expected, "TransformReservedConcurrency={reservation}");
    }
}

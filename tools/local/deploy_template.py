#!/usr/bin/env python3
"""Create Eventline's resources in a local AWS emulator from template.yaml itself.

The SAM template is translated to plain CloudFormation offline and created as a stack in the
emulator, so the streams, table, queues and event source mapping are exactly the template's.
The emulator skips HTTP API resources, so the routes and their authorization are read
from the OpenAPI document the translator makes for the HTTP API. Prints one JSON document describing what the functions need to run:

  {"stack": ..., "outputs": {...},
   "functions": {binary: {"logical_id", "environment", "routes": [{"method", "path", "auth", "jwt"?}],
                          "timeout_seconds", "reserved_concurrency"}},
   "event_sources": [{"function": binary, "stream_arn", "batch_size", ...}]}
"""

import argparse
import io
import json
import os
import re
import sys
import time
import zipfile

import boto3
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

CODE_BUCKET = "eventline-local-code"
CODE_KEY = "function.zip"


class NoManagedPolicies:
    """The translator asks for managed policy ARNs only for names it cannot resolve itself."""

    def load(self):
        return {}


def fail(message):
    print(f"deploy_template: {message}", file=sys.stderr)
    sys.exit(1)


def client(service, endpoint, region):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


def upload_placeholder_code(s3):
    s3.create_bucket(Bucket=CODE_BUCKET)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("bootstrap", "#!/bin/sh\n# the local stack runs the handlers in-process\n")
    s3.put_object(Bucket=CODE_BUCKET, Key=CODE_KEY, Body=buffer.getvalue())


def functions_of(sam):
    return {
        name: resource
        for name, resource in sam.get("Resources", {}).items()
        if resource.get("Type") == "AWS::Serverless::Function"
    }


def binary_of(logical_id, resource):
    binary = resource.get("Metadata", {}).get("BuildProperties", {}).get("Binary")
    if not binary:
        fail(f"function {logical_id} has no Metadata.BuildProperties.Binary")
    return binary


PSEUDO_PARAMETERS = {"AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com", "AWS::AccountId": "123456789012"}


def evaluate(value, context):
    """Resolves the intrinsic functions a route's authorization uses: Ref to a parameter or a
    pseudo parameter, Fn::If on a condition, and the condition functions, with the parameter
    values the stack is created with. `AWS::NoValue` resolves to None."""
    if isinstance(value, list):
        return [evaluate(item, context) for item in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        (name, argument), = value.items()
        if name == "Ref":
            if argument == "AWS::NoValue":
                return None
            if argument in context["parameters"]:
                return context["parameters"][argument]
            if argument in PSEUDO_PARAMETERS:
                return PSEUDO_PARAMETERS[argument]
            if argument == "AWS::Region":
                return context["region"]
            if argument == "AWS::StackName":
                return context["stack"]
            fail(f"cannot resolve Ref {argument!r} in a route's authorization")
        if name == "Fn::If":
            condition, when_true, when_false = argument
            return evaluate(when_true if condition_holds(condition, context) else when_false, context)
        if name == "Fn::Equals":
            left, right = evaluate(argument, context)
            return str(left) == str(right)
        if name == "Fn::Not":
            return not evaluate(argument[0], context)
        if name == "Fn::And":
            return all(evaluate(argument, context))
        if name == "Fn::Or":
            return any(evaluate(argument, context))
        if name == "Fn::Contains":
            values, value = evaluate(argument, context)
            return str(value) in [str(item) for item in values]
        if name == "Condition":
            return condition_holds(argument, context)
        if name == "Fn::Split":
            separator, text = evaluate(argument, context)
            return text.split(separator)
    resolved = {key: evaluate(item, context) for key, item in value.items()}
    return {key: item for key, item in resolved.items() if item is not None}


def condition_holds(name, context):
    declared = context["conditions"].get(name)
    if declared is None:
        fail(f"the template has no condition {name!r}")
    return bool(evaluate(declared, context))


FUNCTION_ARN = re.compile(r"\$\{(\w+)\.Arn\}")
GET_ATT_ARN = re.compile(r'"Fn::GetAtt": \["(\w+)", "Arn"\]')


def route_auth(operation, schemes, context, where, binaries):
    """`AWS_IAM`, `JWT` (with the authorizer's issuer and audience) or `NONE`, as API Gateway
    reads the operation's `security` from the imported OpenAPI document."""
    security = evaluate(operation.get("security", []), context) or []
    names = [name for requirement in security for name in requirement]
    if not names or names == ["NONE"]:
        return {"auth": "NONE"}
    if names == ["AWS_IAM"]:
        return {"auth": "AWS_IAM"}
    if len(names) == 1:
        scheme = evaluate(schemes.get(names[0]), context) or {}
        authorizer = scheme.get("x-amazon-apigateway-authorizer", {})
        if authorizer.get("type") == "jwt":
            jwt = authorizer.get("jwtConfiguration", {})
            audience = jwt.get("audience", [])
            return {
                "auth": "JWT",
                "jwt": {
                    "issuer": jwt.get("issuer", ""),
                    "audience": [audience] if isinstance(audience, str) else audience,
                },
            }
        if authorizer.get("type") == "request":
            uri = json.dumps(scheme.get("x-amazon-apigateway-authorizer", {}).get("authorizerUri", {}))
            function = GET_ATT_ARN.search(uri) or FUNCTION_ARN.search(uri)
            if not function or function.group(1) not in binaries:
                fail(f"{where}: the Lambda authorizer {names[0]} names no function of the template")
            sources = authorizer.get("identitySource", [])
            return {
                "auth": "LAMBDA",
                "lambda_authorizer": {
                    "name": names[0],
                    "function": binaries[function.group(1)],
                    "identity_sources": [sources] if isinstance(sources, str) else sources,
                    "ttl_seconds": int(authorizer.get("authorizerResultTtlInSeconds", 300)),
                    "simple_responses": bool(authorizer.get("enableSimpleResponses", False)),
                },
            }
    fail(f"{where} requires {names}; the local stack enforces AWS_IAM, JWT and Lambda authorizers and NONE")


def check_rules(cfn_template, parameters, region, stack):
    """Refuses parameter values the template's `Rules` refuse, as CloudFormation does before
    creating anything."""
    context = parameter_context(cfn_template, parameters, region, stack)
    for name, rule in cfn_template.get("Rules", {}).items():
        if "RuleCondition" in rule and not evaluate(rule["RuleCondition"], context):
            continue
        for assertion in rule.get("Assertions", []):
            if not evaluate(assertion["Assert"], context):
                fail(f"rule {name}: {assertion.get('AssertDescription', 'assertion failed')}")


NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")


def check_parameters(template, parameters):
    """Refuses what CloudFormation refuses: a parameter the template does not declare, or a
    value its declaration does not allow (a typo would otherwise run with the default)."""
    declared = template.get("Parameters", {})
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        fail(f"the template has no parameter {', '.join(unknown)}; it has {', '.join(sorted(declared))}")
    for name, value in parameters.items():
        problem = parameter_problem(declared[name], value)
        if problem:
            fail(f"parameter {name} {problem}, not {value!r}")


def parameter_problem(declaration, value):
    """What is wrong with `value` for a parameter declared so, or None."""
    allowed = [str(v) for v in declaration.get("AllowedValues", [])]
    if allowed and value not in allowed:
        return f"must be one of {', '.join(allowed)}"
    if declaration.get("Type") == "Number":
        # An integer or a decimal, as CloudFormation reads it (Python's float() would also take
        # "nan", "inf" and "1_000").
        if not NUMBER.fullmatch(value):
            return "must be a number"
        number = float(value)
        if "MinValue" in declaration and number < float(declaration["MinValue"]):
            return f"must be at least {declaration['MinValue']}"
        if "MaxValue" in declaration and number > float(declaration["MaxValue"]):
            return f"must be at most {declaration['MaxValue']}"
        return None
    if "AllowedPattern" in declaration and not re.fullmatch(declaration["AllowedPattern"], value):
        return f"must match {declaration['AllowedPattern']}"
    if "MinLength" in declaration and len(value) < int(declaration["MinLength"]):
        return f"must be at least {declaration['MinLength']} characters"
    if "MaxLength" in declaration and len(value) > int(declaration["MaxLength"]):
        return f"must be at most {declaration['MaxLength']} characters"
    return None


def parameter_context(cfn_template, parameters, region, stack):
    return {
        "parameters": {
            name: parameters.get(name, declared.get("Default", ""))
            for name, declared in cfn_template.get("Parameters", {}).items()
        },
        "conditions": cfn_template.get("Conditions", {}),
        "region": region,
        "stack": stack,
    }


def cors_of(cfn_template, parameters, region, stack):
    """The HTTP API's CORS configuration as API Gateway applies it, or None without one."""
    context = parameter_context(cfn_template, parameters, region, stack)
    for resource in cfn_template["Resources"].values():
        if resource.get("Type") == "AWS::ApiGatewayV2::Api" and "Body" in resource.get("Properties", {}):
            cors = evaluate(resource["Properties"]["Body"].get("x-amazon-apigateway-cors"), context)
            if cors:
                return {
                    "allow_origins": cors.get("allowOrigins", []),
                    "allow_methods": cors.get("allowMethods", []),
                    "allow_headers": cors.get("allowHeaders", []),
                    "expose_headers": cors.get("exposeHeaders", []),
                    "max_age": cors.get("maxAge"),
                    "allow_credentials": bool(cors.get("allowCredentials", False)),
                }
    return None


def system_log_levels_of(cfn_template, parameters, region, stack, binaries):
    """The level of the platform's own lines (start, report) each function's logs keep, as
    Lambda applies it: INFO where the template sets none."""
    context = parameter_context(cfn_template, parameters, region, stack)
    return {
        binary: evaluate(
            cfn_template["Resources"][logical_id].get("Properties", {}).get("LoggingConfig", {}).get("SystemLogLevel"),
            context,
        )
        or "INFO"
        for logical_id, binary in binaries.items()
    }


def routes_of(cfn_template, parameters, region, stack, binaries):
    """Every route of the template's HTTP APIs, read from the OpenAPI document the translator
    made (the emulator does not create HTTP APIs), keyed by the binary that answers it."""
    context = parameter_context(cfn_template, parameters, region, stack)
    routes = {binary: [] for binary in binaries.values()}
    for resource in cfn_template["Resources"].values():
        if resource.get("Type") != "AWS::ApiGatewayV2::Api" or "Body" not in resource.get("Properties", {}):
            continue
        body = resource["Properties"]["Body"]
        schemes = body.get("components", {}).get("securitySchemes", {})
        for path, methods in body.get("paths", {}).items():
            for method, operation in methods.items():
                integration = operation.get("x-amazon-apigateway-integration", {}).get("uri", {})
                target = FUNCTION_ARN.search(json.dumps(integration))
                if not target or target.group(1) not in binaries:
                    continue
                where = f"route {method.upper()} {path}"
                route = {"method": "ANY" if method == "x-amazon-apigateway-any-method" else method.upper(), "path": path}
                route.update(route_auth(operation, schemes, context, where, binaries))
                routes[binaries[target.group(1)]].append(route)
    return routes


def translate(sam, parameters):
    for resource in functions_of(sam).values():
        resource.setdefault("Properties", {})["CodeUri"] = f"s3://{CODE_BUCKET}/{CODE_KEY}"
    function_globals = sam.get("Globals", {}).get("Function", {})
    if "CodeUri" in function_globals:
        function_globals["CodeUri"] = f"s3://{CODE_BUCKET}/{CODE_KEY}"
    return transform(sam, parameters, NoManagedPolicies())


def wait_for_stack(cfn, stack_name, timeout_seconds=60):
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        stack = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]
        status = stack["StackStatus"]
        if status.endswith("_COMPLETE") and "ROLLBACK" not in status:
            return stack
        if "FAILED" in status or "ROLLBACK" in status:
            reasons = [
                f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason', '')}"
                for e in cfn.describe_stack_events(StackName=stack_name)["StackEvents"]
                if "FAILED" in e.get("ResourceStatus", "")
            ]
            fail(f"stack {stack_name} ended {status}: {'; '.join(reasons)}")
        time.sleep(0.2)
    fail(f"stack {stack_name} was not created within {timeout_seconds} s")


def resolve(value, parameters, template):
    """Resolves a `Ref` to a parameter (given or defaulted); other values pass through."""
    if isinstance(value, dict) and set(value) == {"Ref"}:
        name = value["Ref"]
        if name in parameters:
            return parameters[name]
        declared = template.get("Parameters", {}).get(name)
        if declared is not None:
            return declared.get("Default", "")
    return value


def event_sources(lam, cfn_template, parameters, physical_ids, binaries):
    """The event source mappings with every setting the template gives them."""
    declared = {}
    for resource in cfn_template["Resources"].values():
        if resource.get("Type") == "AWS::Lambda::EventSourceMapping":
            props = {k: resolve(v, parameters, cfn_template) for k, v in resource["Properties"].items()}
            function_ref = props["FunctionName"].get("Ref") if isinstance(props["FunctionName"], dict) else None
            declared[function_ref] = props

    sources = []
    for logical_id, binary in binaries.items():
        function_name = physical_ids[logical_id]
        for mapping in lam.list_event_source_mappings(FunctionName=function_name)["EventSourceMappings"]:
            props = declared.get(logical_id, {})
            on_failure = mapping.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
            sources.append(
                {
                    "function": binary,
                    "stream_arn": mapping["EventSourceArn"],
                    "starting_position": props.get("StartingPosition", mapping.get("StartingPosition", "LATEST")),
                    "batch_size": int(props.get("BatchSize", mapping.get("BatchSize", 100))),
                    "batching_window_seconds": int(props.get("MaximumBatchingWindowInSeconds", 0)),
                    "report_batch_item_failures": "ReportBatchItemFailures"
                    in props.get("FunctionResponseTypes", mapping.get("FunctionResponseTypes", [])),
                    "bisect_on_error": bool(props.get("BisectBatchOnFunctionError", False)),
                    "maximum_retry_attempts": int(props.get("MaximumRetryAttempts", -1)),
                    "maximum_record_age_seconds": int(props.get("MaximumRecordAgeInSeconds", -1)),
                    "on_failure_destination": on_failure,
                    "uuid": mapping["UUID"],
                    "function_arn": mapping["FunctionArn"],
                }
            )
    return sources


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True, help="emulator URL, e.g. http://127.0.0.1:5000")
    parser.add_argument("--template", default="template.yaml")
    parser.add_argument("--stack-name", default="eventline-local")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--parameter", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()

    try:
        with open(args.template, encoding="utf-8") as handle:
            sam = yaml_parse(handle.read())
    except OSError as error:
        fail(f"cannot read {args.template}: {error}")

    parameters = {}
    for item in args.parameter:
        key, sep, value = item.partition("=")
        if not sep:
            fail(f"--parameter {item!r} is not KEY=VALUE")
        parameters[key] = value

    check_parameters(sam, parameters)
    binaries = {logical_id: binary_of(logical_id, r) for logical_id, r in functions_of(sam).items()}
    # The translator reads the region for pseudo parameters from the environment.
    os.environ["AWS_DEFAULT_REGION"] = args.region
    cfn_template = translate(sam, parameters)
    check_rules(cfn_template, parameters, args.region, args.stack_name)
    routes = routes_of(cfn_template, parameters, args.region, args.stack_name, binaries)
    system_log_levels = system_log_levels_of(cfn_template, parameters, args.region, args.stack_name, binaries)

    upload_placeholder_code(client("s3", args.endpoint, args.region))
    cfn = client("cloudformation", args.endpoint, args.region)
    cfn.create_stack(
        StackName=args.stack_name,
        TemplateBody=json.dumps(cfn_template),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
    )
    stack = wait_for_stack(cfn, args.stack_name)

    physical_ids = {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in cfn.describe_stack_resources(StackName=args.stack_name)["StackResources"]
        # The emulator lists resources it skipped (the HTTP API) without ids.
        if r.get("LogicalResourceId") and r.get("PhysicalResourceId")
    }
    lam = client("lambda", args.endpoint, args.region)
    functions = {}
    for logical_id, binary in binaries.items():
        config = lam.get_function_configuration(FunctionName=physical_ids[logical_id])
        functions[binary] = {
            "logical_id": logical_id,
            # Lambda hands every variable to the process as text.
            "environment": {k: str(v) for k, v in config.get("Environment", {}).get("Variables", {}).items()},
            "routes": routes[binary],
            "timeout_seconds": config.get("Timeout", 3),
            "system_log_level": system_log_levels[binary],
            "reserved_concurrency": lam.get_function_concurrency(FunctionName=physical_ids[logical_id]).get(
                "ReservedConcurrentExecutions"
            ),
        }

    json.dump(
        {
            "stack": args.stack_name,
            "region": args.region,
            "outputs": {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])},
            "functions": functions,
            "cors": cors_of(cfn_template, parameters, args.region, args.stack_name),
            "event_sources": event_sources(lam, cfn_template, parameters, physical_ids, binaries),
        },
        sys.stdout,
        indent=2,
    )
    print()


if __name__ == "__main__":
    main()

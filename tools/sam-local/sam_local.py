#!/usr/bin/env python3
"""`sam local` over template.yaml, against the AWS emulator, with every answer checked.

1. Every file in events/ goes through `sam local invoke` with the function its name starts
   with (admin-, authorizer-, ingest-, transform-, query-), and its answer is checked against EXPECTED
   below; the reference table (admin-) goes first, so the transform enriches from it.
   In between, GET /metrics (through the query function) must show the totals those
   answers add up to, and the records the ingest invocations put on the ingest stream are
   read back and invoked on the transform as the Kinesis event the event source mapping
   would send, so the metrics and GET /events/{source}/{id} files find them processed.
2. `sam local start-api` serves the template's routes; signed HTTP requests through it
   check POST /events, GET /events/{source}/{id} before and after the transform processed
   the event, GET /health, GET /metrics and PUT /reference/users.

Everything runs against a moto emulator started for the run, holding the template's own
resources (tools/local/deploy_template.py), on loopback. The functions are the host's
`cargo build` binaries (debug: no release build on every run), placed as `bootstrap` in one
folder per function and named by a generated copy of the template. Containers run under a
podman service private to the run (podman_engine.py) behind a Docker-API pass-through
(docker_passthrough.py) that puts them on the host's loopback and gives them the emulator's
endpoint. Everything the run creates (containers, images, storage, sockets, processes) is
removed at the end; its logs stay in .local/sam-local/ when a check fails (or --keep-logs).

Exit status: 0 all checks passed, 1 a check failed, 2 something needed is missing.
"""

import argparse
import base64
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError, ClientError
from samtranslator.yaml_helper import yaml_parse

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docker_passthrough import PassThrough, free_loopback_port  # noqa: E402
from podman_engine import EngineError, PodmanEngine, lambda_architecture  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
REGION = "us-east-1"
# The credentials and signing scope the local stack accepts; SAM hands them to the functions.
ACCESS_KEY = SECRET_KEY = "testing"
API_SERVICE = "execute-api"
STACK_NAME = "eventline-sam-local"
FUNCTION_PREFIXES = {
    "admin-": "AdminFunction",
    "authorizer-": "AuthorizerFunction",
    "ingest-": "IngestFunction",
    "transform-": "TransformFunction",
    "query-": "QueryFunction",
}
BINARIES = ("ingest", "transform", "query", "admin", "authorizer")
METRICS_FILE = "query-get-metrics.json"
INVOKE_TIMEOUT_SECONDS = 180
# Debian's busybox-static: a shell and file commands for the image, needing no libraries.
BUSYBOX = Path("/bin/busybox")


@dataclass(frozen=True)
class Counts:
    """The four totals GET /metrics reports, or what one step adds to them."""

    received: int = 0
    processed: int = 0
    failed: int = 0
    duplicate: int = 0

    def __add__(self, other):
        return Counts(*(a + b for a, b in zip(self.astuple(), other.astuple(), strict=True)))

    def __sub__(self, other):
        return Counts(*(a - b for a, b in zip(self.astuple(), other.astuple(), strict=True)))

    @classmethod
    def of_metrics(cls, body):
        return cls(body["events_received"], body["events_processed"], body["events_failed"], body["events_duplicate"])

    def astuple(self):
        return (self.received, self.processed, self.failed, self.duplicate)

    @property
    def queue_depth(self):
        return self.received - self.processed - self.failed - self.duplicate


@dataclass(frozen=True)
class Ingest:
    status: int
    accepted: int = 0


@dataclass(frozen=True)
class Metrics:
    status: int


@dataclass(frozen=True)
class Admin:
    status: int


@dataclass(frozen=True)
class Transform:
    adds: Counts
    failures: list = field(default_factory=list)


# What each file in events/ must answer. A file not listed here gets the checks every file of
# its function gets: an ingest status from the API's set (its accepted events must then be on
# the stream), a metrics status of 200 or 404, and for the transform no batchItemFailures and
# every record accounted for once (received, and processed, failed or duplicate).
GENERIC_INGEST_STATUSES = (202, 207, 400, 413, 415)
GENERIC_METRICS_STATUSES = (200, 404)
GENERIC_ADMIN_STATUSES = (200, 400, 409, 413, 415)
EXPECTED = {
    "admin-put-reference-users.json": Admin(200),
    "ingest-post-event.json": Ingest(202, accepted=1),
    "ingest-post-array.json": Ingest(202, accepted=3),
    "ingest-post-batch.json": Ingest(202, accepted=2),
    "ingest-post-partial.json": Ingest(207, accepted=1),
    "ingest-post-invalid.json": Ingest(400),
    "ingest-post-not-json.json": Ingest(400),
    "ingest-post-wrong-content-type.json": Ingest(415),
    "query-get-event.json": Metrics(200),
    "query-get-event-missing.json": Metrics(404),
    "query-get-health.json": Metrics(200),
    "query-get-healthz.json": Metrics(200),
    "query-get-metrics.json": Metrics(200),
    # Records without an ingest id came from no ingest request: the transform counts them
    # received as well, so the queue depth still drains to 0.
    "transform-kinesis-good.json": Transform(Counts(received=3, processed=3)),
    "transform-kinesis-poison.json": Transform(Counts(received=4, processed=2, failed=2)),
    "transform-kinesis-duplicate.json": Transform(Counts(received=3, processed=2, duplicate=1)),
    # Made by `sam local generate-event kinesis get-records`: the API's shape without
    # received_at, taken from the record's arrival; the invalid one breaks a rule.
    "transform-kinesis-sam-generated.json": Transform(Counts(received=1, processed=1)),
    "transform-kinesis-sam-invalid.json": Transform(Counts(received=1, failed=1)),
    # Two records in the KPL's aggregated format, holding four events between them.
    "transform-kinesis-kpl-aggregated.json": Transform(Counts(received=4, processed=4)),
}


class CheckFailed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise CheckFailed(message)


def step(message):
    print(f"sam-local: {message}", flush=True)


# --- Preconditions ------------------------------------------------------------------------


def find_missing(binaries_dir, events):
    """Everything the run needs that is not there, each with how to get it."""
    missing = []
    for command, package in (("podman", "podman"), ("runc", "runc"), ("ldd", "libc-bin")):
        if shutil.which(command) is None:
            missing.append(f"`{command}` (apt-get install {package}; `make sam-local` installs it)")
    if not BUSYBOX.exists():
        missing.append("/bin/busybox (apt-get install busybox-static; `make sam-local` installs it)")
    if not (VENV_BIN / "sam").exists() or rapid_interface_emulator(lambda_architecture()) is None:
        missing.append(f"the SAM CLI in {VENV_BIN} (`make .venv/.dev`)")
    for binary in BINARIES:
        if not (binaries_dir / binary).exists():
            missing.append(f"{binaries_dir / binary} (cargo build {' '.join(f'--bin {b}' for b in BINARIES)})")
    if not events:
        missing.append(f"event files in {REPO / 'events'}")
    unprefixed = [e.name for e in events if function_of(e.name) is None]
    if unprefixed:
        missing.append(f"a function for {', '.join(unprefixed)} (names start with {', '.join(FUNCTION_PREFIXES)})")
    return missing


def function_of(file_name):
    return next((fn for prefix, fn in FUNCTION_PREFIXES.items() if file_name.startswith(prefix)), None)


def rapid_interface_emulator(architecture):
    """The runtime interface emulator that ships inside the SAM CLI package, or None."""
    pattern = f"python3*/site-packages/samcli/local/rapid/aws-lambda-rie-{architecture}"
    return next((REPO / ".venv" / "lib").glob(pattern), None)


# --- The emulator and the stack -----------------------------------------------------------


class Emulator:
    """moto's server through the local stack's launcher, on a free loopback port."""

    def __init__(self, log_dir):
        self.port = free_loopback_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / "moto.log"
        self._process = None

    def start(self, timeout_seconds=30):
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(
                [sys.executable, str(REPO / "tools/local/moto_server.py"), "-H", "127.0.0.1", "-p", str(self.port),
                 "--exit-with-parent"],
                stdin=subprocess.PIPE,  # the launcher exits when this run ends, however it ends
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise CheckFailed(f"moto_server exited with {self._process.returncode}; see {self.log_path}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise CheckFailed(f"moto_server did not answer on port {self.port} within {timeout_seconds} s")

    def stop(self):
        stop_process(self._process)


def stop_process(process, sig=signal.SIGTERM, timeout_seconds=20):
    """Stops one process this run started, by its PID, and waits for it."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=timeout_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def deploy_stack(endpoint, architecture):
    """The template's resources in the emulator; returns deploy_template.py's description."""
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools/local/deploy_template.py"),
            "--endpoint",
            endpoint,
            "--template",
            str(REPO / "template.yaml"),
            "--stack-name",
            STACK_NAME,
            "--region",
            REGION,
            "--parameter",
            f"Architecture={architecture}",
        ],
        capture_output=True,
        text=True,
    )
    check(result.returncode == 0, f"deploy_template.py failed: {result.stderr.strip()}")
    return json.loads(result.stdout)


def aws(service, endpoint):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


# --- Functions and template for SAM -------------------------------------------------------


def stage_functions(run_dir, binaries_dir, stack):
    """One code folder per function with its binary as `bootstrap`, a copy of the template
    that points each function at its folder, and the --env-vars file with the resources the
    emulator created. Returns (template path, env-vars path)."""
    sam = yaml_parse((REPO / "template.yaml").read_text())
    env_vars = {}
    for binary, function in stack["functions"].items():
        logical_id = function["logical_id"]
        code_dir = run_dir / "functions" / logical_id
        code_dir.mkdir(parents=True)
        source = binaries_dir / binary
        try:
            os.link(source, code_dir / "bootstrap")  # debug binaries are large: no copy
        except OSError:
            shutil.copy2(source, code_dir / "bootstrap")
        resource = sam["Resources"][logical_id]
        resource["Properties"]["CodeUri"] = f"functions/{logical_id}"
        # The binary is built already: nothing for SAM to build.
        resource.pop("Metadata", None)
        env_vars[logical_id] = function["environment"]
    template = run_dir / "template.json"
    template.write_text(json.dumps(sam, indent=1))
    env_file = run_dir / "env-vars.json"
    env_file.write_text(json.dumps(env_vars, indent=1))
    return template, env_file


class Sam:
    """The SAM CLI from the virtual environment, against the pass-through's socket."""

    def __init__(self, run_dir, log_dir, template, env_file, docker_socket, architecture, emulator_endpoint):
        self.log_dir = log_dir
        self.common = [
            "--template",
            str(template),
            "--env-vars",
            str(env_file),
            "--parameter-overrides",
            f"Architecture={architecture}",
            "--region",
            REGION,
            "--skip-pull-image",
            "--container-host",
            "127.0.0.1",
            "--container-host-interface",
            "127.0.0.1",
            "--layer-cache-basedir",
            str(run_dir / "sam-layers"),
        ]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.env.update(
            DOCKER_HOST=f"unix://{docker_socket}",
            SAM_CLI_TELEMETRY="0",
            AWS_ACCESS_KEY_ID=ACCESS_KEY,
            AWS_SECRET_ACCESS_KEY=SECRET_KEY,
            AWS_DEFAULT_REGION=REGION,
            # SAM asks STS for the account id before every run; the emulator answers at once,
            # where AWS is unreachable and costs seconds of retries.
            AWS_ENDPOINT_URL_STS=emulator_endpoint,
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
        )
        self.invocations = 0

    def invoke(self, logical_id, event_path, label):
        """The function's answer to one event, as `sam local invoke` prints it."""
        self.invocations += 1
        log_path = self.log_dir / f"invoke-{self.invocations:02d}-{label}.log"
        command = [str(VENV_BIN / "sam"), "local", "invoke", logical_id, "--event", str(event_path), *self.common]
        with open(log_path, "w") as log:
            try:
                result = subprocess.run(
                    command, env=self.env, stdout=subprocess.PIPE, stderr=log, text=True, timeout=INVOKE_TIMEOUT_SECONDS
                )
            except subprocess.TimeoutExpired:
                raise CheckFailed(
                    f"sam local invoke {logical_id} {label} took over {INVOKE_TIMEOUT_SECONDS} s; see {log_path}"
                ) from None
            log.write(f"\n--- stdout ---\n{result.stdout}")
        check(
            result.returncode == 0, f"sam local invoke {logical_id} {label} exited {result.returncode}; see {log_path}"
        )
        try:
            answer = json.loads(result.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise CheckFailed(f"sam local invoke {logical_id} {label} printed no JSON answer; see {log_path}") from None
        check(
            "errorType" not in answer,
            f"{logical_id} failed on {label}: {answer.get('errorType')}: {answer.get('errorMessage')}; see {log_path}",
        )
        return answer

    def start_api(self, port):
        log_path = self.log_dir / "start-api.log"
        command = [
            str(VENV_BIN / "sam"),
            "local",
            "start-api",
            *self.common,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            # One container per function, kept between requests: seconds saved per request.
            "--warm-containers",
            "LAZY",
            "--no-watch",
        ]
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                command,
                # Python's fault handler prints every thread's stack on SIGABRT: what a hung
                # shutdown was waiting on, in the log (see `stop_start_api`).
                env={**self.env, "PYTHONFAULTHANDLER": "1"},
                preexec_fn=takes_ctrl_c,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return process, log_path


def http_answer(answer, label):
    """(status, parsed JSON body) of an API Gateway proxy answer."""
    status = answer.get("statusCode")
    check(isinstance(status, int), f"{label}: the answer has no statusCode: {str(answer)[:300]}")
    body = answer.get("body") or ""
    if answer.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    try:
        return status, json.loads(body) if body else None
    except ValueError:
        raise CheckFailed(f"{label}: answered {status} with a body that is not JSON: {body[:300]}") from None


# --- The ingest stream as the event source mapping reads it -------------------------------


class StreamReader:
    """Reads a stream from where it last stopped, shard by shard, as Kinesis events."""

    def __init__(self, kinesis, stream_name, stream_arn="", role_arn=""):
        self.kinesis = kinesis
        self.stream_name = stream_name
        self.stream_arn = stream_arn
        self.role_arn = role_arn
        self.positions = {}

    def read_new(self):
        """Every record added since the last call (all of them the first time)."""
        records = []
        for shard in self.kinesis.list_shards(StreamName=self.stream_name)["Shards"]:
            shard_id = shard["ShardId"]
            after = self.positions.get(shard_id)
            iterator = self.kinesis.get_shard_iterator(
                StreamName=self.stream_name,
                ShardId=shard_id,
                **(
                    {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": after}
                    if after
                    else {"ShardIteratorType": "TRIM_HORIZON"}
                ),
            )["ShardIterator"]
            while iterator:
                page = self.kinesis.get_records(ShardIterator=iterator, Limit=1000)
                for record in page["Records"]:
                    records.append(self.as_event_record(shard_id, record))
                    self.positions[shard_id] = record["SequenceNumber"]
                if not page["Records"]:
                    break
                iterator = page.get("NextShardIterator")
        return records

    def as_event_record(self, shard_id, record):
        return {
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": record["PartitionKey"],
                "sequenceNumber": record["SequenceNumber"],
                "data": base64.b64encode(record["Data"]).decode(),
                "approximateArrivalTimestamp": record["ApproximateArrivalTimestamp"].timestamp(),
            },
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": f"{shard_id}:{record['SequenceNumber']}",
            "eventName": "aws:kinesis:record",
            "invokeIdentityArn": self.role_arn,
            "awsRegion": REGION,
            "eventSourceARN": self.stream_arn,
        }


def identity_of(event_record):
    """(source, id) of a Kinesis event record's event, or None when it does not decode."""
    try:
        event = json.loads(base64.b64decode(event_record["kinesis"]["data"]))
    except ValueError:
        return None
    if isinstance(event, dict) and isinstance(event.get("id"), str) and isinstance(event.get("source"), str):
        return (event["source"], event["id"])
    return None


def all_identities(kinesis, stream_name):
    return {identity_of(record) for record in StreamReader(kinesis, stream_name).read_new()}


# --- Phase 1: every events/ file through `sam local invoke` -------------------------------


class InvokePhase:
    """The events/ files in the order a pipeline meets them: ingest requests, the batch the
    stream then holds, reads of what was processed, then the transform's own fixtures.
    `totals` follows what GET /metrics must report after each step."""

    def __init__(self, sam, run_dir, events, stream, aws_clients, outputs):
        self.sam = sam
        self.run_dir = run_dir
        self.events = {e.name: e for e in events}
        self.stream = stream
        self.kinesis, self.sqs = aws_clients
        self.outputs = outputs
        self.totals = Counts()
        self.ingested = set()
        self.processed = set()

    def run(self):
        names = sorted(self.events)
        for name in [n for n in names if n.startswith("admin-")]:
            self.admin(name)
        for name in [n for n in names if n.startswith("authorizer-")]:
            self.authorizer(name)
        for name in [n for n in names if n.startswith("ingest-")]:
            self.ingest(name)
        self.expect_totals("after the ingest files")
        self.transform_stream()
        self.expect_totals("after the ingest stream")
        for name in [n for n in names if n.startswith("query-")]:
            self.metrics(name)
        for name in [n for n in names if n.startswith("transform-")]:
            self.transform_file(name)
        self.expect_totals("after the transform files")
        self.expect_published()

    def invoke(self, logical_id, path, label):
        started = time.monotonic()
        answer = self.sam.invoke(logical_id, path, label)
        return answer, time.monotonic() - started

    def admin(self, name):
        expected = EXPECTED.get(name)
        answer, seconds = self.invoke("AdminFunction", self.events[name], name)
        status, body = http_answer(answer, name)
        allowed = GENERIC_ADMIN_STATUSES if expected is None else (expected.status,)
        check(status in allowed, f"{name}: expected {' or '.join(map(str, allowed))}, got {status}: {body}")
        if status == 200:
            check(
                isinstance(body.get("generation"), int) and isinstance(body.get("users"), int),
                f"{name}: 200 without the generation stored: {body}",
            )
        else:
            check(body.get("status") == status and body.get("title"), f"{name}: a {status} must be a problem: {body}")
        step(f"ok  {name}: {status} ({seconds:.1f} s){generic_note(expected)}")

    def authorizer(self, name):
        """The write-key authorizer's simple response: the sample's key was never made, so it is denied."""
        answer, seconds = self.invoke("AuthorizerFunction", self.events[name], name)
        check(answer == {"isAuthorized": False, "context": {}}, f"{name}: expected a denial, got {answer}")
        step(f"ok  {name}: denied ({seconds:.1f} s)")

    def ingest(self, name):
        expected = EXPECTED.get(name)
        answer, seconds = self.invoke("IngestFunction", self.events[name], name)
        status, body = http_answer(answer, name)
        if expected is None:
            check(
                status in GENERIC_INGEST_STATUSES,
                f"{name}: expected one of {GENERIC_INGEST_STATUSES}, got {status}: {body}",
            )
        else:
            check(status == expected.status, f"{name}: expected {expected.status}, got {status}: {body}")
        if status == 202 and "results" not in body:
            check(body.get("status") == "accepted", f"{name}: 202 without status accepted: {body}")
            accepted = [body]
        elif status in (202, 207):
            accepted = [r for r in body["results"] if r.get("status") == "accepted"]
            check(body.get("accepted") == len(accepted), f"{name}: `accepted` disagrees with the results: {body}")
            check(
                (status == 202) == (len(accepted) == len(body["results"])),
                f"{name}: {status} does not fit {len(accepted)} of {len(body['results'])} accepted",
            )
        else:
            check(
                body.get("status") == status and body.get("title"),
                f"{name}: a {status} must be a problem document with its status and title: {body}",
            )
            accepted = []
        if expected is not None:
            check(
                len(accepted) == expected.accepted,
                f"{name}: expected {expected.accepted} accepted, got {len(accepted)}",
            )
        self.ingested |= {(r["source"], r["id"]) for r in accepted}
        self.totals += Counts(received=len(accepted))
        step(f"ok  {name}: {status}, {len(accepted)} accepted ({seconds:.1f} s){generic_note(expected)}")

    def read_totals(self, label):
        """GET /metrics through the query function, with its sample event."""
        answer, _ = self.invoke("QueryFunction", self.events[METRICS_FILE], label)
        status, body = http_answer(answer, label)
        check(status == 200, f"GET /metrics {label}: expected 200, got {status}: {body}")
        return Counts.of_metrics(body), body["current_queue_depth"]

    def expect_totals(self, label):
        got, depth = self.read_totals(label.replace(" ", "-"))
        check(got == self.totals, f"GET /metrics {label}: expected {self.totals}, got {got}")
        check(
            depth == self.totals.queue_depth,
            f"GET /metrics {label}: expected queue depth {self.totals.queue_depth}, got {depth}",
        )
        step(f"ok  GET /metrics {label}: {got}, queue depth {depth}")

    def transform_stream(self):
        """What the event source mapping would do: the new ingest-stream records, one batch."""
        records = self.stream.read_new()
        identities = {identity_of(r) for r in records}
        check(
            len(records) == len(self.ingested) and identities == self.ingested,
            f"the ingest stream holds {len(records)} records {sorted(map(str, identities))}, "
            f"expected the {len(self.ingested)} accepted {sorted(map(str, self.ingested))}",
        )
        path = self.run_dir / "transform-ingest-stream.json"
        path.write_text(json.dumps({"Records": records}))
        answer, seconds = self.invoke("TransformFunction", path, "ingest-stream")
        check(answer == {"batchItemFailures": []}, f"transform of the ingest stream: {answer}")
        self.totals += Counts(processed=len(records))
        self.processed |= identities
        step(f"ok  ingest stream: {len(records)} records read back, transformed, no failures ({seconds:.1f} s)")

    def metrics(self, name):
        expected = EXPECTED.get(name)
        answer, seconds = self.invoke("QueryFunction", self.events[name], name)
        status, body = http_answer(answer, name)
        allowed = GENERIC_METRICS_STATUSES if expected is None else (expected.status,)
        check(status in allowed, f"{name}: expected {' or '.join(map(str, allowed))}, got {status}: {body}")
        path_parameters = json.loads(self.events[name].read_text()).get("pathParameters") or {}
        if "source" in path_parameters and "id" in path_parameters:
            identity = (path_parameters["source"], path_parameters["id"])
            # Found exactly when it was processed: the expected status says which.
            check(
                (status == 200) == (identity in self.processed),
                f"{name}: {identity} answered {status}; processed: {identity in self.processed}",
            )
            if status == 200:
                check((body.get("source"), body.get("id")) == identity, f"{name}: answered another event: {body}")
                payload = body.get("payload")
                check(payload is None or payload == payload.upper(), f"{name}: payload not transformed: {body}")
        if status == 404:
            check(body.get("status") == 404 and body.get("title"), f"{name}: a 404 must be a problem document: {body}")
        if status == 200 and body.get("checks") is not None:
            check(
                body.get("status") == "ok" and body["checks"] == {"table": "ok", "stream": "ok"},
                f"{name}: expected table and stream ok: {body}",
            )
        if status == 200 and "events_received" in body:
            check(
                Counts.of_metrics(body) == self.totals, f"{name}: expected {self.totals}, got {Counts.of_metrics(body)}"
            )
        step(f"ok  {name}: {status} ({seconds:.1f} s){generic_note(expected)}")

    def transform_file(self, name):
        expected = EXPECTED.get(name)
        records = json.loads(self.events[name].read_text())["Records"]
        answer, seconds = self.invoke("TransformFunction", self.events[name], name)
        failures = [] if expected is None else expected.failures
        check(answer == {"batchItemFailures": failures}, f"{name}: expected batchItemFailures {failures}, got {answer}")
        if expected is None:
            # Records from no ingest request are counted received here, each with one outcome.
            got, _ = self.read_totals(f"after-{name}")
            adds = got - self.totals
            check(
                adds.received == len(records) and adds.processed + adds.failed + adds.duplicate == len(records),
                f"{name}: {len(records)} records added {adds}; expected each received once, with one outcome",
            )
            self.totals = got
        else:
            self.totals += expected.adds
            # A file whose every record is refused (a rule broken) publishes nothing.
            if expected.adds.processed or expected.adds.duplicate:
                self.processed |= {i for i in map(identity_of, records) if i is not None}
        step(f"ok  {name}: batchItemFailures {failures} ({seconds:.1f} s){generic_note(expected)}")
        self.expect_dead_letters(name)

    def expect_dead_letters(self, name):
        """Every failed record is one message on the dead-letter queue."""
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.outputs["DeadLetterQueueUrl"], AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        count = int(attributes["ApproximateNumberOfMessages"])
        check(
            count == self.totals.failed,
            f"after {name}: {self.totals.failed} records failed, the dead-letter queue holds {count}",
        )

    def expect_published(self):
        published = all_identities(self.kinesis, self.outputs["OutputStreamName"])
        unpublished = self.processed - published
        check(not unpublished, f"processed but not on the output stream: {sorted(unpublished)}")
        step(f"ok  output stream: all {len(self.processed)} processed events on it; {self.totals.failed} dead letters")


def generic_note(expected):
    return " (not in EXPECTED: generic checks)" if expected is None else ""


# --- Phase 2: HTTP through `sam local start-api` ------------------------------------------


class Api:
    """Signed requests to the API on a loopback port (SigV4, as IAM-authorised routes need)."""

    def __init__(self, port):
        self.port = port
        self.signer = SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), API_SERVICE, REGION)

    def request(self, method, path, body=None, content_type="application/json", timeout=60, authorization=None):
        """Signed, unless `authorization` gives the Authorization header to send instead ("" for none)."""
        url = f"http://127.0.0.1:{self.port}{path}"
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
        headers = {"content-type": content_type} if data is not None else {}
        if authorization:
            headers["authorization"] = authorization
        request = AWSRequest(method=method, url=url, data=data, headers=headers)
        if authorization is None:
            self.signer.add_auth(request)
        prepared = request.prepare()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=prepared.body, headers=dict(prepared.headers))
            response = connection.getresponse()
            raw = response.read()
        finally:
            connection.close()
        try:
            return response.status, json.loads(raw) if raw else None
        except ValueError:
            return response.status, raw.decode(errors="replace")

    def wait_until_listening(self, process, log_path, timeout_seconds=60):
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise CheckFailed(f"sam local start-api exited with {process.returncode}; see {log_path}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise CheckFailed(
            f"sam local start-api did not listen on port {self.port} within {timeout_seconds} s; see {log_path}"
        )


def start_api_phase(sam, run_dir, stream, totals):
    """The API through `sam local start-api`; `totals` are what GET /metrics reports before.
    Returns whether SAM exited by itself when interrupted (see `stop_start_api`)."""
    port = free_loopback_port()
    process, log_path = sam.start_api(port)
    api = Api(port)
    try:
        api.wait_until_listening(process, log_path)

        def expect(method, path, status, body=None, **kwargs):
            started = time.monotonic()
            got, answer = api.request(method, path, body, **kwargs)
            label = f"start-api {method} {path}"
            check(got == status, f"{label}: expected {status}, got {got}: {answer}; see {log_path}")
            check(isinstance(answer, dict), f"{label}: expected a JSON object, got {answer!r}")
            step(f"ok  {label}: {got} ({time.monotonic() - started:.1f} s)")
            return answer

        health = expect("GET", "/health", 200)
        check(health.get("checks") == {"table": "ok", "stream": "ok"}, f"start-api GET /health: {health}")

        event_id = f"sam-local-{uuid.uuid4().hex[:12]}"
        event = {"id": event_id, "source": "web", "type": "user_action", "user_id": "user-api", "payload": "straße api"}
        accepted = expect("POST", "/events", 202, event)
        check(
            accepted == {"id": event_id, "source": "web", "status": "accepted"}, f"start-api POST /events: {accepted}"
        )
        refused = expect("POST", "/events", 415, b"id=1", content_type="application/x-www-form-urlencoded")
        check(refused.get("status") == 415, f"start-api POST /events as a form: not a problem document: {refused}")
        expect("GET", f"/events/web/{event_id}", 404)

        records = stream.read_new()
        identities = [identity_of(r) for r in records]
        check(identities == [("web", event_id)], f"after POST /events the ingest stream has {identities} added")
        path = run_dir / "transform-start-api.json"
        path.write_text(json.dumps({"Records": records}))
        started = time.monotonic()
        answer = sam.invoke("TransformFunction", path, "start-api-event")
        check(answer == {"batchItemFailures": []}, f"transform of the start-api event: {answer}")
        step(f"ok  the posted event read back from the ingest stream, transformed ({time.monotonic() - started:.1f} s)")
        totals += Counts(received=1, processed=1)

        stored = expect("GET", f"/events/web/{event_id}", 200)
        check(
            (stored.get("source"), stored.get("id"), stored.get("payload")) == ("web", event_id, "STRASSE API"),
            f"start-api GET /events/web/{event_id}: {stored}",
        )
        metrics = expect("GET", "/metrics", 200)
        got, depth = Counts.of_metrics(metrics), metrics["current_queue_depth"]
        check(
            got == totals and depth == totals.queue_depth,
            f"start-api GET /metrics: expected {totals}, got {got}, queue depth {depth}",
        )
        step(f"ok  start-api GET /metrics totals: {got}, queue depth {depth}")

        # Newer than the sample file's table, and not in the future.
        ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
        table = {"user_metadata": {"user-api": {"plan": "pro", "region": "eu"}}, "ts": ts}
        replaced = expect("PUT", "/reference/users", 200, table)
        check(replaced.get("users") == 1 and replaced.get("ts") == ts, f"start-api PUT /reference/users: {replaced}")
        current = expect("GET", "/reference/users", 200)
        check(current == replaced, f"start-api GET /reference/users: {current}, after {replaced}")

        # Segment's tracking API with a write key, through SAM's run of the template's
        # write-key authorizer (identity source: the Authorization header).
        made = expect("POST", "/write-keys", 201, {"source": "sam"})
        basic = "Basic " + base64.b64encode(f"{made['write_key']}:".encode()).decode()
        call = {"batch": [{"type": "track", "event": "Signed Up", "userId": "user-api", "messageId": event_id + "-v1"}]}
        answer = expect("POST", "/v1/batch", 200, call, authorization=basic)
        check(answer.get("accepted") == 1 and answer.get("refused") == [], f"start-api POST /v1/batch: {answer}")
        records = stream.read_new()
        check(
            [identity_of(r) for r in records] == [("sam", event_id + "-v1")],
            f"after POST /v1/batch the ingest stream has {[identity_of(r) for r in records]} added",
        )
        other = "Basic " + base64.b64encode(b"wk_0123456789abcdef_" + b"A" * 43 + b":").decode()
        expect("POST", "/v1/batch", 403, call, authorization=other)
        expect("POST", "/v1/batch", 401, call, authorization="")
    finally:
        exited = stop_start_api(process, log_path)
    return exited


# How long SAM gets to stop its warm containers after Ctrl-C: a few seconds when it works.
START_API_STOP_SECONDS = 30


def takes_ctrl_c():
    """Run in a child before it starts: SIGINT's default disposition. A shell starts a
    background job (`&`, as CI runners and nohup may) with SIGINT ignored, and a child
    inherits that: Python then takes no KeyboardInterrupt, and SAM would never stop."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop_start_api(process, log_path):
    """Interrupts `sam local start-api` as Ctrl-C does, after which SAM removes its warm
    containers. Returns False when SAM did not exit in time: SAM's shutdown can hang on its
    own (aws/aws-sam-cli#4147); its threads' stacks then go to its log before it is ended."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=START_API_STOP_SECONDS)
        return True
    except subprocess.TimeoutExpired:
        stop_process(process, sig=signal.SIGABRT, timeout_seconds=10)
        step(
            f"WARNING: sam local start-api did not exit within {START_API_STOP_SECONDS} s of Ctrl-C "
            f"(its threads' stacks are at the end of {log_path}); it was ended, and its containers are removed"
        )
        return False


# --- The run ------------------------------------------------------------------------------


def ingest_stream_reader(stack, endpoint):
    kinesis, cfn, lam = (aws(service, endpoint) for service in ("kinesis", "cloudformation", "lambda"))
    name = stack["outputs"]["IngestStreamName"]
    transform = next(
        r["PhysicalResourceId"]
        for r in cfn.describe_stack_resources(StackName=STACK_NAME)["StackResources"]
        if r.get("LogicalResourceId") == "TransformFunction"
    )
    return StreamReader(
        kinesis,
        name,
        kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"],
        lam.get_function_configuration(FunctionName=transform)["Role"],
    )


def run(args, run_dir, socket_dir, events):
    architecture = lambda_architecture()
    log_dir = run_dir / "logs"
    log_dir.mkdir()
    started = time.monotonic()
    # Clean-up in reverse order of start-up, each step whatever the ones before it met.
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(lambda: step(f"finished in {time.monotonic() - started:.0f} s"))
        emulator = Emulator(log_dir)
        cleanup.callback(emulator.stop)
        emulator.start()
        stack = deploy_stack(emulator.endpoint, architecture)
        template, env_file = stage_functions(run_dir, args.binaries, stack)
        step(f"emulator on {emulator.endpoint} with the template's resources")

        engine = PodmanEngine(run_dir, socket_dir)
        cleanup.callback(report_problems, engine.close)
        engine.start()
        rapid_image = f"public.ecr.aws/lambda/provided:al2023-rapid-{architecture}"
        binaries = [args.binaries / b for b in BINARIES]
        engine.import_lambda_image(run_dir, rapid_image, binaries, rapid_interface_emulator(architecture), BUSYBOX)
        docker_socket = socket_dir / "docker.sock"
        passthrough = PassThrough(str(docker_socket), str(engine.socket_path), {"AWS_ENDPOINT_URL": emulator.endpoint})
        cleanup.callback(passthrough.stop)
        passthrough.start()
        step(f"podman ready with {rapid_image} ({time.monotonic() - started:.1f} s)")

        sam = Sam(run_dir, log_dir, template, env_file, docker_socket, architecture, emulator.endpoint)
        stream = ingest_stream_reader(stack, emulator.endpoint)
        clients = (stream.kinesis, aws("sqs", emulator.endpoint))
        phase = InvokePhase(sam, run_dir, events, stream, clients, stack["outputs"])
        phase_started = time.monotonic()
        phase.run()
        step(f"sam local invoke: {sam.invocations} invocations checked ({time.monotonic() - phase_started:.0f} s)")

        phase_started = time.monotonic()
        exited = start_api_phase(sam, run_dir, stream, phase.totals)
        step(f"sam local start-api: checked ({time.monotonic() - phase_started:.0f} s)")
        leftover = engine.container_ids()
        # When SAM exits by itself it has removed its containers; when it had to be ended,
        # the engine's clean-up removes them.
        check(not (exited and leftover), f"SAM left {len(leftover)} containers behind: {leftover}")


def report_problems(close):
    for problem in close():
        print(f"sam-local: clean-up: {problem}", file=sys.stderr)


def remove_run_files(run_dir, keep):
    """Removes the run's folder but `keep` (if given); says what it could not remove."""
    for entry in run_dir.iterdir():
        if entry == keep:
            continue
        try:
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        except OSError as error:
            print(f"sam-local: clean-up: cannot remove {entry}: {error}", file=sys.stderr)
    if keep is None:
        with contextlib.suppress(OSError):
            run_dir.rmdir()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--binaries",
        type=Path,
        default=REPO / "target" / "debug",
        help="folder with the function binaries (default: target/debug)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the run's logs when every check passes too")
    args = parser.parse_args()
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
    # A terminated run cleans up as an interrupted one does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    events = sorted((REPO / "events").glob("*.json"))
    missing = find_missing(args.binaries, events)
    if missing:
        print("\n  ".join(["sam-local: cannot run; missing:", *missing]), file=sys.stderr)
        return 2

    base = REPO / ".local" / "sam-local"
    base.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=base))
    socket_dir = run_dir
    # A unix socket path has room for about 100 bytes: a short folder when the run's is deep.
    if len(str(run_dir / "podman.sock")) > 100:
        socket_dir = Path(tempfile.mkdtemp(prefix="eventline-sam-"))
    passed = False
    try:
        step(f"run folder {run_dir}")
        run(args, run_dir, socket_dir, events)
        passed = True
    except (CheckFailed, EngineError, BotoCoreError, ClientError) as error:
        print(f"sam-local: FAILED: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if socket_dir != run_dir:
            shutil.rmtree(socket_dir, ignore_errors=True)
        logs = run_dir / "logs"
        keep = logs if logs.exists() and (args.keep_logs or not passed) else None
        remove_run_files(run_dir, keep)
        if keep is not None:
            print(f"sam-local: logs of this run: {logs}", file=sys.stderr)
    step("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the local stack needs of moto for its answers to be right, as moto_server.py installs it.

One request at a time. moto's server is threaded, but its models are not safe under
concurrent requests: two Kinesis puts can take the same sequence number, so one record
silently replaces the other, and nothing keeps DynamoDB transactions apart. Each connection
is still read and answered on its own thread; only the work inside moto is serialised, in
the order the requests arrived (`FifoLock`).

Transactions. moto backs up the whole table before each action of a TransactWriteItems call
and puts it back when the call is cancelled, so a transaction of N actions copies the table
N times and the local stack slows down as the table grows (the fault-injection run took over
six minutes). Here only the items the call may write are backed up, and a cancelled
transaction puts exactly those back: a cancelled transaction still leaves every item as it
was.

Kinesis event source mappings. moto's `Stream.put_record` hands every record to each event
source mapping on the stream by running the function in Docker: without Docker that fails on
every record and adds a CloudWatch log stream per record; with a Docker API it would start a
container per record, a second consumer beside the local stack's poller
(tools/local/src/poller.rs), which plays the mapping. The mapping stays defined in moto.

Faults, off by default, for fault-injection tests. `POST /_eventline/faults` with
`{"rate": 0.1, "seed": 7, "kinds": ["throttle", "server_error", "reset", "lost_response"]}`
makes that share of AWS calls (every request but `/_eventline/*` and moto's own `/moto-api/*`)
fail, each with a kind drawn from `kinds` (default all four):
  throttle       the service's throttling error, not forwarded to moto;
  server_error   the service's HTTP 500, not forwarded;
  reset          the connection is dropped with no response, not forwarded;
  lost_response  forwarded (it takes effect), then the connection is dropped unanswered.
`rate` 0 turns faults off. Counters run from the start unless a POST says
`"reset_counts": true`. Both methods answer the settings and the counts: AWS requests seen,
faults injected per kind and per operation (`X-Amz-Target`, else `service.Action` or
`service.METHOD`). Faults are switched at run time so that stack setup runs before they are
on. Every POST restarts the draws from `random.Random(seed)` (seed 0 if not given), so a
run's fault pattern can be repeated.

DynamoDB's rules. A write DynamoDB refuses is refused here too, with DynamoDB's error: numbers
beyond 38 significant digits or outside 1E-130 .. 9.99E+125 (also as the result of ADD or SET
arithmetic, which runs exact instead of rounding to 28 digits), and items over 400 KB as
DynamoDB measures them, on PutItem, UpdateItem, BatchWriteItem, TransactWriteItems and
PartiQL writes. See dynamodb_rules.py.

`install()` patches moto's models; it runs after the launcher's speed patches, because the
rules wrap the update and transaction paths as they are then. `EventlineApplication` wraps
the application moto's server serves. Each patch checks at start, by a digest of the source it
replaces or relies on, that the installed moto is the one it was written against.
"""

import collections
import copy
import hashlib
import http
import inspect
import io
import json
import random
import socket
import struct
import threading
import time
import types
import uuid
import zlib
from urllib.parse import parse_qs

import moto
from moto.dynamodb import models
from moto.kinesis import models as kinesis_models

import dynamodb_rules


def expect_source(function, digest):
    """Fail at start unless `function` is the moto code a patch here was written against."""
    actual = hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16]
    if actual != digest:
        raise RuntimeError(
            f"moto {moto.__version__}: {function.__module__}.{function.__qualname__} is not the code "
            "the patch in tools/local (moto_server.py, moto_correctness.py) was written for "
            f"(source digest {actual}, expected {digest}); check the patch against the new code, "
            "then update the digest"
        )


# --- DynamoDB transactions: back up the items a call writes, not whole tables -----------

_backups = threading.local()


def _deepcopy(value, memo=None):
    # Inside a transaction the items it writes are already backed up (below): moto's own
    # whole-table copy is skipped, so a rollback by moto leaves the table as it is and the
    # item backups restore it.
    if getattr(_backups, "items", None) is not None:
        return value
    return copy.deepcopy(value, memo)


_transact_write_items = models.DynamoDBBackend.transact_write_items


def _key_of(backend, table_name, operation):
    if "Key" in operation:
        return operation["Key"]
    table = backend.get_table(table_name)
    names = [table.hash_key_attr] + ([table.range_key_attr] if table.range_key_attr else [])
    return {name: operation["Item"][name] for name in names}


def _item_backups(backend, transact_items):
    """(table, key, attributes or None) of every item the call may write, as it is now."""
    backups = []
    for transact_item in transact_items:
        for operation in transact_item.values():
            table_name = operation["TableName"]
            key = _key_of(backend, table_name, operation)
            current = backend.get_item(table_name, key)
            attributes = copy.deepcopy(current.to_json()["Attributes"]) if current else None
            backups.append((table_name, key, attributes))
    return backups


def _transact_write_items_with_item_backups(self, transact_items):
    try:
        backups = _item_backups(self, transact_items)
    except Exception:
        # A malformed call (no such table, a missing key): moto reports it as it would.
        return _transact_write_items(self, transact_items)
    _backups.items = backups
    try:
        return _transact_write_items(self, transact_items)
    except Exception:
        for table_name, key, attributes in reversed(backups):
            if attributes is None:
                self.delete_item(table_name, key)
            else:
                self.put_item(table_name, attributes)
        raise
    finally:
        _backups.items = None



# --- Kinesis: event source mappings are the local stack's to play -------------------------

_stream_put_record = kinesis_models.Stream.put_record


def _put_record_without_lambda(self, partition_key, explicit_hash_key, data):
    # moto's `Stream.put_record` without handing the record to the stream's event source
    # mappings (see the module's docstring).
    shard = self.get_shard_for_key(partition_key, explicit_hash_key)
    sequence_number = shard.put_record(partition_key, data, explicit_hash_key)
    return sequence_number, shard.shard_id


# --- Faults -------------------------------------------------------------------------------

CONTROL_PREFIX = "/_eventline/"
FAULTS_PATH = "/_eventline/faults"
KINDS = ("throttle", "server_error", "reset", "lost_response")
DYNAMODB_ERROR_PREFIX = "com.amazonaws.dynamodb.v20120810#"
SQS_ERROR_PREFIX = "com.amazonaws.sqs#"


class Faults:
    """Settings, the random draws and the counters. Used only under the request lock."""

    def __init__(self):
        self.configure({"rate": 0}, reset_counts=True)

    def configure(self, settings, reset_counts=False):
        self.rate = settings["rate"]
        self.seed = settings.get("seed", 0)
        self.kinds = list(settings.get("kinds", KINDS))
        self.random = random.Random(self.seed)
        if reset_counts:
            self.requests = 0
            self.injected = dict.fromkeys(KINDS, 0)
            self.by_operation = {}

    def draw(self):
        """The kind of fault for the next AWS request, or None."""
        self.requests += 1
        if self.rate <= 0 or self.random.random() >= self.rate:
            return None
        return self.random.choice(self.kinds)

    def count(self, kind, operation):
        self.injected[kind] += 1
        per_kind = self.by_operation.setdefault(operation, {})
        per_kind[kind] = per_kind.get(kind, 0) + 1

    def report(self):
        return {
            "rate": self.rate,
            "seed": self.seed,
            "kinds": self.kinds,
            "requests": self.requests,
            "injected": dict(self.injected),
            "by_operation": {op: dict(kinds) for op, kinds in self.by_operation.items()},
        }


def parse_settings(body):
    """The settings in a POST body, or raise ValueError saying what is wrong."""
    try:
        settings = json.loads(body or b"{}")
    except ValueError as error:
        raise ValueError(f"body is not JSON: {error}") from None
    if not isinstance(settings, dict):
        raise ValueError("body must be a JSON object")
    unknown = set(settings) - {"rate", "seed", "kinds", "reset_counts"}
    if unknown:
        raise ValueError(f"unknown fields: {sorted(unknown)}")
    rate = settings.get("rate")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
        raise ValueError("rate must be a number from 0 to 1")
    seed = settings.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError("seed must be an integer")
    kinds = settings.get("kinds", list(KINDS))
    if not isinstance(kinds, list) or not kinds or any(k not in KINDS for k in kinds):
        raise ValueError(f"kinds must be a non-empty list drawn from {list(KINDS)}")
    reset_counts = settings.get("reset_counts", False)
    if not isinstance(reset_counts, bool):
        raise ValueError("reset_counts must be true or false")
    return {"rate": rate, "seed": seed, "kinds": kinds}, reset_counts


# --- Error answers as the real services give them -------------------------------------------


def _signing_service(environ):
    """The service named in the SigV4 credential scope (header or presigned URL), if any."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    if "Credential=" in auth:
        scope = auth.split("Credential=", 1)[1].split(",", 1)[0]
    else:
        scope = parse_qs(environ.get("QUERY_STRING", "")).get("X-Amz-Credential", [""])[0]
    parts = scope.split("/")  # key id / date / region / service / aws4_request
    return parts[3].lower() if len(parts) == 5 else None


def _is_form(environ):
    return environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded")


def operation_name(environ, body):
    """`X-Amz-Target` when there is one, else `service.Action` or `service.METHOD`."""
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        return target
    service = _signing_service(environ) or "unknown"
    if _is_form(environ):
        action = parse_qs(body.decode("utf-8", "replace")).get("Action")
        if action:
            return f"{service}.{action[0]}"
    return f"{service}.{environ.get('REQUEST_METHOD', 'GET')}"


def _json_body(body):
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class Answer:
    """A complete HTTP answer built without moto."""

    def __init__(self, status, content_type, body, headers=()):
        self.status = status
        self.body = body.encode() if isinstance(body, str) else body
        self.headers = [("Content-Type", content_type), *headers]

    def send(self, start_response):
        phrase = http.HTTPStatus(self.status).phrase
        headers = [*self.headers, ("Content-Length", str(len(self.body)))]
        start_response(f"{self.status} {phrase}", headers)
        return [self.body]


def _aws_json(status, version, error_type, message, extra=None, headers=()):
    body = json.dumps({"__type": error_type, "message": message, **(extra or {})})
    return Answer(
        status,
        f"application/x-amz-json-{version}",
        body,
        [("x-amzn-RequestId", str(uuid.uuid4())), *headers],
    )


def _dynamodb(status, error, message, extra=None):
    answer = _aws_json(status, "1.0", DYNAMODB_ERROR_PREFIX + error, message, extra)
    # DynamoDB signs every answer with a CRC32 of its body; some SDKs check it.
    answer.headers.append(("x-amz-crc32", str(zlib.crc32(answer.body))))
    return answer


def _transaction_cancelled(item_count, conflict_at):
    codes = ["TransactionConflict" if i == conflict_at else "None" for i in range(item_count)]
    reasons = [
        {"Code": code, "Message": "Transaction is ongoing for the item"}
        if code == "TransactionConflict"
        else {"Code": code}
        for code in codes
    ]
    message = (
        "Transaction cancelled, please refer cancellation reasons for specific reasons "
        f"[{', '.join(codes)}]"
    )
    return _dynamodb(400, "TransactionCanceledException", message, {"CancellationReasons": reasons})


def _sqs(status, error, fault, message):
    # SQS over JSON keeps its query-protocol error code in x-amzn-query-error: "Code;Sender".
    return _aws_json(
        status, "1.0", SQS_ERROR_PREFIX + error, message, headers=[("x-amzn-query-error", f"{error};{fault}")]
    )


def _s3_xml(status, code, message):
    request_id = uuid.uuid4().hex[:16].upper()
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<RequestId>{request_id}</RequestId></Error>"
    )
    return Answer(status, "application/xml", body, [("x-amz-request-id", request_id)])


def _query_xml(status, fault, code, message):
    body = (
        f"<ErrorResponse><Error><Type>{fault}</Type><Code>{code}</Code>"
        f"<Message>{message}</Message></Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
    )
    return Answer(status, "text/xml", body)


def _rest_json(status, code, message):
    body = json.dumps({"message": message})
    return Answer(
        status,
        "application/json",
        body,
        [("x-amzn-ErrorType", code), ("x-amzn-RequestId", str(uuid.uuid4()))],
    )


def throttle_answer(environ, body, rng):
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target == "DynamoDB_20120810.TransactWriteItems":
        item_count = len(_json_body(body).get("TransactItems") or [])
        if rng.random() < 0.5 and item_count:
            return _transaction_cancelled(item_count, rng.randrange(item_count))
        return _dynamodb(400, "ThrottlingException", "Rate of requests exceeds the allowed throughput.")
    if target.startswith("DynamoDB_"):
        return _dynamodb(
            400,
            "ProvisionedThroughputExceededException",
            "The level of configured provisioned throughput for the table was exceeded. "
            "Consider increasing your provisioning level with the UpdateTable API.",
        )
    if target.startswith("Kinesis_"):
        request = _json_body(body)
        stream = request.get("StreamName") or str(request.get("StreamARN", "unknown")).rsplit("/", 1)[-1]
        return _aws_json(
            400,
            "1.1",
            "ProvisionedThroughputExceededException",
            f"Rate exceeded for shard shardId-000000000000 in stream {stream} under account 123456789012.",
        )
    if target.startswith("AmazonSQS."):
        return _sqs(400, "ThrottlingException", "Sender", "Rate exceeded")
    if target:
        return _aws_json(400, "1.1", "ThrottlingException", "Rate exceeded")
    if _signing_service(environ) == "s3":
        return _s3_xml(503, "SlowDown", "Please reduce your request rate.")
    if _is_form(environ):
        return _query_xml(400, "Sender", "Throttling", "Rate exceeded")
    return _rest_json(429, "ThrottlingException", "Rate exceeded")


def server_error_answer(environ):
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target.startswith("DynamoDB_"):
        return _dynamodb(500, "InternalServerError", "Internal server error")
    if target.startswith("Kinesis_"):
        return _aws_json(500, "1.1", "InternalFailure", "Internal service failure.")
    if target.startswith("AmazonSQS."):
        return _sqs(500, "InternalError", "Receiver", "We encountered an internal error. Please try again.")
    if target:
        return _aws_json(500, "1.1", "InternalFailure", "Internal service failure.")
    if _signing_service(environ) == "s3":
        return _s3_xml(500, "InternalError", "We encountered an internal error. Please try again.")
    if _is_form(environ):
        return _query_xml(500, "Receiver", "InternalFailure", "Internal service failure.")
    return _rest_json(500, "InternalFailure", "Internal service failure.")


def drop_connection(environ):
    """End the client's connection without a single response byte."""
    sock = environ["werkzeug.socket"]
    # A zero linger turns werkzeug's final close into an abort (RST) instead of a graceful one.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    try:
        # Shutting down reading as well stops werkzeug waiting for a next keep-alive request.
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # the client has gone already
    # werkzeug takes a ConnectionError from the application as a client that went away:
    # it writes nothing more and logs nothing.
    raise ConnectionAbortedError("fault injection: connection dropped")


# --- The application moto's main serves ---------------------------------------------------


def _read_body(environ):
    """Read the whole request body off the socket, leaving a re-readable copy for moto."""
    stream = environ["wsgi.input"]
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > 0:
        body = stream.read(length)
    elif environ.get("wsgi.input_terminated"):
        body = stream.read()  # chunked: werkzeug's reader stops at the last chunk
    else:
        body = b""
    environ["wsgi.input"] = io.BytesIO(body)
    return body


def _consumed(result):
    """The whole response body, so that moto has finished its work when this returns."""
    try:
        return [b"".join(result)]
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()


class FifoLock:
    """A lock taken in the order it was asked for. `threading.Lock` wakes an arbitrary waiter,
    so under a stream of cheap requests (a client reading back thousands of items) one caller
    can wait many seconds, long enough for its SDK to time out; here a request waits only for
    those that arrived before it."""

    def __init__(self):
        self._guard = threading.Lock()
        self._waiting = collections.deque()
        self._held = False

    def __enter__(self):
        with self._guard:
            if not self._held:
                self._held = True
                return self
            turn = threading.Lock()
            turn.acquire()
            self._waiting.append(turn)
        turn.acquire()  # released by the holder before us, who hands the lock over
        return self

    def __exit__(self, *exc_info):
        with self._guard:
            if self._waiting:
                self._waiting.popleft().release()
            else:
                self._held = False


# How long DynamoDB remembers a transaction's ClientRequestToken.
IDEMPOTENCY_SECONDS = 600


class IdempotencyTokens:
    """DynamoDB's idempotent transactions, which moto does not keep: a TransactWriteItems
    with a `ClientRequestToken` that succeeded is not applied again when the same request
    comes back within ten minutes (it answers success), and the same token with other
    parameters is refused (`IdempotentParameterMismatchException`)."""

    def __init__(self):
        self.seen = {}  # token -> (digest of the request without it, when it succeeded)

    @staticmethod
    def token_and_digest(environ, body):
        if environ.get("HTTP_X_AMZ_TARGET") != "DynamoDB_20120810.TransactWriteItems":
            return None, None
        request = _json_body(body)
        token = request.pop("ClientRequestToken", None)
        if not token:
            return None, None
        return token, hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()

    def answer(self, token, digest):
        """The answer to a repeated token, or None when the request is to be applied."""
        now = time.monotonic()
        self.seen = {t: seen for t, seen in self.seen.items() if now - seen[1] < IDEMPOTENCY_SECONDS}
        seen = self.seen.get(token)
        if seen is None:
            return None
        if seen[0] != digest:
            return _dynamodb(
                400,
                "IdempotentParameterMismatchException",
                "The request uses the same client token as a previous, but non-identical request.",
            )
        body = b"{}"
        return Answer(200, "application/x-amz-json-1.0", body, [("x-amz-crc32", str(zlib.crc32(body)))])

    def succeeded(self, token, digest):
        self.seen[token] = (digest, time.monotonic())


class EventlineApplication:
    """moto's application, one request at a time, behind the fault layer."""

    def __init__(self, moto_app):
        self.moto_app = moto_app
        self.lock = FifoLock()
        self.faults = Faults()
        self.tokens = IdempotencyTokens()

    def __call__(self, environ, start_response):
        # Reading the request stays outside the lock, as does writing the answer (werkzeug
        # writes what this returns after it returns): only moto's work is serialised.
        body = _read_body(environ)
        with self.lock:
            path = environ.get("PATH_INFO", "")
            if path.startswith(CONTROL_PREFIX):
                return self.control(environ, body).send(start_response)
            if path.startswith("/moto-api"):  # moto's own controls are not AWS calls
                return _consumed(self.moto_app(environ, start_response))
            kind = self.faults.draw()
            if kind is not None:
                self.faults.count(kind, operation_name(environ, body))
            if kind == "throttle":
                return throttle_answer(environ, body, self.faults.random).send(start_response)
            if kind == "server_error":
                return server_error_answer(environ).send(start_response)
            if kind == "reset":
                drop_connection(environ)
            token, digest = self.tokens.token_and_digest(environ, body)
            repeated = token and self.tokens.answer(token, digest)
            if repeated:
                result = repeated.send(start_response)
            else:
                status = []

                def recording_start_response(line, headers, *exc_info):
                    status.append(line)
                    return start_response(line, headers, *exc_info)

                result = _consumed(self.moto_app(environ, recording_start_response))
                if token and status and status[0].startswith("200"):
                    self.tokens.succeeded(token, digest)
            if kind == "lost_response":
                drop_connection(environ)
            return result

    def control(self, environ, body):
        if environ.get("PATH_INFO") != FAULTS_PATH:
            return _rest_json(404, "NotFound", f"no such path; try {FAULTS_PATH}")
        method = environ.get("REQUEST_METHOD")
        if method == "POST":
            try:
                settings, reset_counts = parse_settings(body)
            except ValueError as error:
                return _rest_json(400, "ValidationException", str(error))
            self.faults.configure(settings, reset_counts)
        elif method != "GET":
            return _rest_json(405, "MethodNotAllowed", "use GET or POST")
        return Answer(200, "application/json", json.dumps(self.faults.report()))


# --- Installing ---------------------------------------------------------------------------

_installed = False


def install():
    """Patches moto's models: item backups for transactions, mappings left to the local
    poller, and DynamoDB's rules (installed last: they wrap the update and transaction paths
    as the patches before them left them). Once per process."""
    global _installed
    if _installed:
        return
    _installed = True
    expect_source(_transact_write_items, "81db2cb7d94e39c9")
    models.copy = types.SimpleNamespace(deepcopy=_deepcopy)
    models.DynamoDBBackend.transact_write_items = _transact_write_items_with_item_backups
    expect_source(_stream_put_record, "cafda0597b231b64")
    kinesis_models.Stream.put_record = _put_record_without_lambda
    dynamodb_rules.install(expect_source)

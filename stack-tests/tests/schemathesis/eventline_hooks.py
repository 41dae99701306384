"""Schemathesis hooks: every request authenticated as its operation's security asks, and
bodies sent as their headers say.

- `sigv4` operations: the auth provider marks the case with a placeholder `Authorization`
  value; the signature itself is made from the prepared request (final URL, headers and body
  bytes) just before it is sent, because a SigV4 signature covers exactly those.
- `writeKey` operations (Segment's routes with the key in the header): Basic, with the write
  key made for the run (`EVENTLINE_HEADER_WRITE_KEY`) as the user name.
- analytics.js's routes, which take the key as `writeKey` in the body: a generated key of the
  shape the document gives (one the schema accepts) is replaced with the key made for the run
  (`EVENTLINE_BODY_WRITE_KEY`), so that those calls reach ingest and are stored; a missing or
  malformed one goes out as generated, to be refused.
- The run's own keys are never revoked: schemathesis takes `key_id`s from the answers it gets
  (`GET /write-keys` lists them), and a `DELETE /write-keys/{key_id}` of one of them goes to
  an id no key has instead.
- A body sent with `Content-Encoding: gzip` (or `x-gzip`) is compressed, before it is signed.
- An `application/x-ndjson` body goes out one JSON value a line: a list a line per item,
  anything else as one line.

A probe that removes or replaces the `Authorization` header (schemathesis's `ignored_auth`
check) goes out unsigned or with its own made-up value, so the gateway's refusal of it is
tested too.
"""

import base64
import gzip
import json
import os
import re
from urllib.parse import urlsplit, urlunsplit

import requests
import schemathesis
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

PLACEHOLDER = "sign-with-sigv4-when-sent"
CREDENTIALS = Credentials(
    os.environ.get("EVENTLINE_ACCESS_KEY_ID", "testing"),
    os.environ.get("EVENTLINE_SECRET_ACCESS_KEY", "testing"),
)
REGION = os.environ.get("EVENTLINE_REGION", "us-east-1")
HEADER_WRITE_KEY = os.environ["EVENTLINE_HEADER_WRITE_KEY"]
BODY_WRITE_KEY = os.environ["EVENTLINE_BODY_WRITE_KEY"]
GZIP_ENCODINGS = ("gzip", "x-gzip")
# `wk_{key_id}_{secret}`
RUN_KEY_IDS = {key.split("_")[1] for key in (HEADER_WRITE_KEY, BODY_WRITE_KEY)}
NO_KEY_ID = "0000000000000000"


def security_schemes(operation):
    """The names of the security schemes the operation accepts (its own, else the document's)."""
    requirements = operation.definition.raw.get("security", operation.schema.raw_schema.get("security", []))
    return {name for requirement in requirements for name in requirement}


def takes_key_in_body(operation):
    """analytics.js's routes: open at the gateway, the key in the body."""
    return operation.path.startswith("/v1/") and not security_schemes(operation)


def write_key_shape(operation):
    """The document's pattern of a write key, read as schemathesis reads it when it generates one."""
    return re.compile(operation.schema.raw_schema["components"]["schemas"]["WriteKey"]["pattern"])


# Not cached: the value depends on the operation.
@schemathesis.auth(refresh_interval=None)
class ByOperationSecurity:
    def get(self, case, ctx):
        schemes = security_schemes(ctx.operation)
        if "writeKey" in schemes:
            user_pass = base64.b64encode(f"{HEADER_WRITE_KEY}:".encode()).decode()
            return f"Basic {user_pass}"
        if "sigv4" in schemes:
            return PLACEHOLDER
        return None

    def set(self, case, data, ctx):
        case.headers = case.headers or {}
        case.headers["Authorization"] = data


class PrepareBody(requests.auth.AuthBase):
    """Compresses a body sent as gzip, then replaces the placeholder with a signature over
    host, content-type and the body as sent."""

    def __call__(self, prepared):
        if prepared.headers.get("Content-Encoding") in GZIP_ENCODINGS:
            body = prepared.body or b""
            if isinstance(body, str):
                body = body.encode("utf-8")
            prepared.body = gzip.compress(body, mtime=0)
        if prepared.headers.get("Authorization") != PLACEHOLDER:
            return prepared
        del prepared.headers["Authorization"]
        body = prepared.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
        headers = {}
        if "Content-Type" in prepared.headers:
            headers["Content-Type"] = prepared.headers["Content-Type"]
        # requests writes a space in the query as `+`, which API Gateway also reads as a space
        # but botocore signs as written: send and sign it as `%20` (a plus is already `%2B`).
        parts = urlsplit(prepared.url)
        if "+" in parts.query:
            prepared.url = urlunsplit(parts._replace(query=parts.query.replace("+", "%20")))
        request = AWSRequest(method=prepared.method, url=prepared.url, data=body, headers=headers)
        SigV4Auth(CREDENTIALS, "execute-api", REGION).add_auth(request)
        prepared.headers["Authorization"] = request.headers["Authorization"]
        prepared.headers["X-Amz-Date"] = request.headers["X-Amz-Date"]
        return prepared


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    if isinstance(value, bytes):
        return value
    lines = value if isinstance(value, list) else [value]
    return "".join(json.dumps(line) + "\n" for line in lines).encode("utf-8")


@schemathesis.hook
def before_call(context, case, kwargs):
    if takes_key_in_body(case.operation) and isinstance(case.body, dict):
        key = case.body.get("writeKey")
        if isinstance(key, str) and write_key_shape(case.operation).search(key):
            case.body = {**case.body, "writeKey": BODY_WRITE_KEY}
    if case.operation.path == "/write-keys/{key_id}" and (case.path_parameters or {}).get("key_id") in RUN_KEY_IDS:
        case.path_parameters = {**case.path_parameters, "key_id": NO_KEY_ID}
    kwargs["auth"] = PrepareBody()

"""Schemathesis hooks: sign requests with SigV4, as every client of the API must.

The auth provider marks a case as authenticated with a placeholder `Authorization` value;
the signature itself is made from the prepared request (final URL, headers and body bytes)
just before it is sent, because a SigV4 signature covers exactly those. A probe that removes
or replaces the header (schemathesis's `ignored_auth` check) goes out unsigned or with its
own made-up value, so the gateway's refusal of it is tested too.
"""

import os
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


@schemathesis.auth()
class SigV4Placeholder:
    def get(self, case, ctx):
        return PLACEHOLDER

    def set(self, case, data, ctx):
        case.headers = case.headers or {}
        case.headers["Authorization"] = data


class SignPlaceholder(requests.auth.AuthBase):
    """Replaces the placeholder with a signature over host, content-type and the body."""

    def __call__(self, prepared):
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


@schemathesis.hook
def before_call(context, case, kwargs):
    kwargs["auth"] = SignPlaceholder()

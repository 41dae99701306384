"""Signs one request with a Python SigV4 signer, as its users call it, sends it, and prints
the answer's status on the first line and its body after.

usage: sign_and_send.py botocore|awscurl METHOD URL [BODY] [--host HOST]

- botocore: `SigV4Auth.add_auth` on an `AWSRequest` of the URL (as schemathesis's hook signs),
  sent byte for byte as the URL is written. `--host` signs and sends that `Host` instead.
- awscurl: its own signer and sender (`awscurl.awscurl.make_request`).
"""

import http.client
import sys
from urllib.parse import urlsplit

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"
SERVICE = "execute-api"


def botocore_send(method, url, body, host):
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    headers = {"Content-Type": "application/json"}
    if host:
        headers["Host"] = host
    request = AWSRequest(method=method, url=url, data=body.encode(), headers=headers)
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), SERVICE, REGION).add_auth(request)
    parts = urlsplit(url)
    target = parts.path + ("?" + parts.query if parts.query else "")
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    connection.request(method, target, body=body.encode(), headers=dict(request.headers.items()))
    response = connection.getresponse()
    return response.status, response.read().decode()


def awscurl_send(method, url, body):
    from awscurl.awscurl import make_request

    headers = {"Content-Type": "application/json"}
    response = make_request(
        method, SERVICE, REGION, url, headers, body, ACCESS_KEY, SECRET_KEY, None, False
    )
    return response.status_code, response.text


def main(argv):
    host = None
    if "--host" in argv:
        at = argv.index("--host")
        host = argv[at + 1]
        del argv[at : at + 2]
    signer, method, url = argv[:3]
    body = argv[3] if len(argv) > 3 else ""
    if signer == "botocore":
        status, text = botocore_send(method, url, body, host)
    elif signer == "awscurl":
        if host:
            sys.exit("awscurl signs the URL's own host")
        status, text = awscurl_send(method, url, body)
    else:
        sys.exit(f"unknown signer {signer}")
    print(status)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])

"""Tests for the Docker-API pass-through (docker_passthrough.py): what it changes in a
container creation, and that every other byte crosses unchanged, on keep-alive, chunked and
upgraded connections.

Run: .venv/bin/python -m unittest discover -s tools/sam-local -p 'test_*.py'
"""

import json
import os
import socket
import tempfile
import threading
import unittest

from docker_passthrough import PassThrough, rewrite_create, with_content_length

SAM_CREATE = {
    "Image": "public.ecr.aws/lambda/provided:al2023-rapid-x86_64",
    "Entrypoint": ["/var/rapid/aws-lambda-rie", "--log-level", "error"],
    "Cmd": ["bootstrap"],
    "Env": ["AWS_REGION=us-east-1", "AWS_ENDPOINT_URL=http://elsewhere"],
    "ExposedPorts": {"8080/tcp": {}},
    "HostConfig": {
        "PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "5123"}]},
        "Binds": ["/code:/var/task:ro"],
    },
}
ENV = {"AWS_ENDPOINT_URL": "http://127.0.0.1:4000"}


def request(method, path, body=b"", extra=()):
    head = [f"{method} {path} HTTP/1.1", "Host: docker", *extra]
    if body:
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class RewriteCreateTest(unittest.TestCase):
    def rewritten(self, spec=SAM_CREATE):
        return json.loads(rewrite_create(json.dumps(spec).encode(), ENV, pick_port=lambda: 41000))

    def test_when_sam_creates_a_lambda_container_should_put_it_on_the_host_network(self):
        spec = self.rewritten()
        self.assertEqual(spec["HostConfig"]["NetworkMode"], "host")
        self.assertEqual(spec["HostConfig"]["PortBindings"], {})
        self.assertNotIn("ExposedPorts", spec)
        self.assertEqual(spec["HostConfig"]["Binds"], ["/code:/var/task:ro"], "other settings stay")

    def test_should_serve_the_emulator_on_sams_port_and_the_runtime_api_on_its_own(self):
        self.assertEqual(
            self.rewritten()["Entrypoint"],
            [
                "/var/rapid/aws-lambda-rie",
                "--log-level",
                "error",
                "--runtime-interface-emulator-address",
                "127.0.0.1:5123",
                "--runtime-api-address",
                "127.0.0.1:41000",
            ],
        )

    def test_should_set_the_given_variables_replacing_any_of_the_same_name(self):
        self.assertEqual(self.rewritten()["Env"], ["AWS_REGION=us-east-1", "AWS_ENDPOINT_URL=http://127.0.0.1:4000"])

    def test_when_no_emulator_port_is_published_should_leave_the_body_untouched(self):
        body = json.dumps({"Image": "busybox", "Entrypoint": ["/bin/sh"], "HostConfig": {}}).encode()
        self.assertIs(rewrite_create(body, ENV), body)

    def test_with_content_length_should_replace_only_that_header(self):
        head = b"POST /containers/create HTTP/1.1\r\nHost: docker\r\nContent-Length: 10\r\nX-A: b\r\n\r\n"
        self.assertEqual(
            with_content_length(head, 42),
            b"POST /containers/create HTTP/1.1\r\nHost: docker\r\nX-A: b\r\nContent-Length: 42\r\n\r\n",
        )


class Upstream:
    """A unix-socket peer that records what one connection sends until EOF, then answers."""

    def __init__(self, path, answer=b"answer"):
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(path)
        self.server.listen(1)
        self.answer = answer
        self.received = b""
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        connection, _ = self.server.accept()
        with connection:
            while data := connection.recv(65536):
                self.received += data
            connection.sendall(self.answer)
        self.server.close()


class ForwardingTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="passthrough-test-")
        self.upstream_path = os.path.join(self.dir, "upstream.sock")
        self.listen_path = os.path.join(self.dir, "docker.sock")

    def tearDown(self):
        for name in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, name))
        os.rmdir(self.dir)

    def exchange(self, sent):
        upstream = Upstream(self.upstream_path)
        passthrough = PassThrough(self.listen_path, self.upstream_path, ENV).start()
        try:
            with socket.socket(socket.AF_UNIX) as client:
                client.settimeout(10)
                client.connect(self.listen_path)
                client.sendall(sent)
                client.shutdown(socket.SHUT_WR)
                answer = b""
                while data := client.recv(65536):
                    answer += data
            upstream.thread.join(timeout=10)
        finally:
            passthrough.stop()
        return upstream.received, answer

    def test_keep_alive_requests_should_pass_unchanged_but_the_container_creation(self):
        create = json.dumps(SAM_CREATE).encode()
        sent = (
            request("GET", "/_ping")
            + request("POST", "/v1.35/containers/create?name=x", create)
            + request("GET", "/v1.35/version")
        )
        received, answer = self.exchange(sent)
        self.assertEqual(answer, b"answer", "the upstream's answer reaches the client")
        self.assertTrue(received.startswith(request("GET", "/_ping")))
        self.assertTrue(received.endswith(request("GET", "/v1.35/version")))
        middle = received[len(request("GET", "/_ping")) : -len(request("GET", "/v1.35/version"))]
        head, body = middle.split(b"\r\n\r\n", 1)
        self.assertIn(f"Content-Length: {len(body)}".encode(), head.split(b"\r\n"))
        self.assertEqual(json.loads(body)["HostConfig"]["NetworkMode"], "host")

    def test_a_chunked_body_should_pass_as_it_is_and_the_next_request_after_it(self):
        chunked = (
            b"POST /v1.35/build HTTP/1.1\r\nHost: docker\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n"
        )
        sent = chunked + request("GET", "/_ping")
        received, _ = self.exchange(sent)
        self.assertEqual(received, sent)

    def test_after_an_upgrade_the_raw_stream_should_pass_unparsed(self):
        upgrade = request("POST", "/v1.35/containers/x/attach?stream=1", extra=("Connection: Upgrade", "Upgrade: tcp"))
        raw = b"\x01\x00\x00\x00not http at all\r\n\r\n"
        received, _ = self.exchange(upgrade + raw)
        self.assertEqual(received, upgrade + raw)


if __name__ == "__main__":
    unittest.main()

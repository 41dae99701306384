"""Tests for the moto launcher (moto_server.py, moto_correctness.py): one request at a time,
the fault layer, DynamoDB's rules, and the patches that keep moto's cost per call flat.

`MotoLauncherTest` starts the launcher on a free loopback port and talks to it with boto3,
retries off, so every injected fault reaches the test as the SDK parses it. The patch tests
import the launcher (which patches moto in this process) and compare each patched method with
moto's own code, kept by the launcher, on the same inputs.
Run: .venv/bin/python -m unittest tools/local/test_moto_server.py
"""

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from collections import OrderedDict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError

LAUNCHER = Path(__file__).resolve().with_name("moto_server.py")
REGION = "us-east-1"
TABLE = "faults-table"
STREAM = "faults-stream"
QUEUE = "faults-queue"
BUCKET = "faults-bucket"


def free_port():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        return listener.getsockname()[1]


def error_code(error):
    return error.response["Error"]["Code"]


def http_status(error):
    return error.response["ResponseMetadata"]["HTTPStatusCode"]


class LauncherTestCase(unittest.TestCase):
    """Starts the launcher on a free loopback port for the class; `client` talks to it."""

    @classmethod
    def setUpClass(cls):
        # Loopback must never go through a proxy from the environment.
        os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
        cls.port = free_port()
        cls.endpoint = f"http://127.0.0.1:{cls.port}"
        cls.log = tempfile.NamedTemporaryFile(prefix="moto-launcher-test-", suffix=".log", delete=False)
        # --exit-with-parent: a test run killed outright leaves no server behind.
        cls.process = subprocess.Popen(
            [sys.executable, str(LAUNCHER), "-H", "127.0.0.1", "-p", str(cls.port), "--exit-with-parent"],
            stdin=subprocess.PIPE,
            stdout=cls.log,
            stderr=subprocess.STDOUT,
        )
        cls.addClassCleanup(cls.stop_server)
        cls.wait_until_ready()

    @classmethod
    def stop_server(cls):
        cls.process.stdin.close()
        cls.process.terminate()  # by PID: only the server this test started
        try:
            cls.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            cls.process.kill()
            cls.process.wait(timeout=5)
        cls.log.close()
        os.unlink(cls.log.name)

    @classmethod
    def wait_until_ready(cls):
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if cls.process.poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", cls.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        cls.log.flush()
        raise RuntimeError(f"the launcher did not start; its output:\n{Path(cls.log.name).read_text()}")

    @classmethod
    def client(cls, service):
        return boto3.client(
            service,
            endpoint_url=cls.endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=20),
        )


class MotoLauncherTest(LauncherTestCase):
    """Tests are numbered: the first one needs the server as it starts, faults untouched."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.dynamodb = cls.client("dynamodb")
        cls.kinesis = cls.client("kinesis")
        cls.sqs = cls.client("sqs")
        cls.s3 = cls.client("s3")
        cls.cloudformation = cls.client("cloudformation")
        cls.dynamodb.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        cls.kinesis.create_stream(StreamName=STREAM, ShardCount=1)
        cls.queue_url = cls.sqs.create_queue(QueueName=QUEUE)["QueueUrl"]
        cls.s3.create_bucket(Bucket=BUCKET)

    # --- the control endpoint ---

    def control(self, method, body=None):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            payload = None if body is None else json.dumps(body)
            connection.request(method, "/_eventline/faults", body=payload)
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        finally:
            connection.close()

    def set_faults(self, **settings):
        status, answer = self.control("POST", settings)
        self.assertEqual(status, 200, answer)
        self.addCleanup(self.control, "POST", {"rate": 0})
        return answer

    def faults(self):
        status, answer = self.control("GET")
        self.assertEqual(status, 200, answer)
        return answer

    # --- helpers ---

    def put_item(self, key):
        self.dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": key}})

    def item_exists(self, key):
        return "Item" in self.dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": key}}, ConsistentRead=True)

    def raw_put_item(self, key):
        """PutItem over a bare socket: every byte that comes back before the connection ends."""
        body = json.dumps({"TableName": TABLE, "Item": {"pk": {"S": key}}}).encode()
        request = (
            "POST / HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{self.port}\r\n"
            "X-Amz-Target: DynamoDB_20120810.PutItem\r\n"
            "Content-Type: application/x-amz-json-1.0\r\n"
            "Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/dynamodb/aws4_request, "
            "SignedHeaders=host, Signature=0\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as connection:
            connection.sendall(request)
            received = b""
            try:
                while chunk := connection.recv(4096):
                    received += chunk
            except ConnectionResetError:
                pass  # ended by a reset rather than an orderly close: the same to a client
            return received

    def read_shard(self, stream):
        iterator = self.kinesis.get_shard_iterator(
            StreamName=stream, ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        records = []
        while True:
            page = self.kinesis.get_records(ShardIterator=iterator, Limit=10000)
            records += page["Records"]
            if not page["Records"] or page.get("MillisBehindLatest", 0) == 0:
                return records
            iterator = page["NextShardIterator"]

    # --- tests ---

    def test_1_faults_are_off_by_default(self):
        answer = self.faults()
        self.assertEqual(answer["rate"], 0)
        self.assertEqual(answer["kinds"], ["throttle", "server_error", "reset", "lost_response"])
        for i in range(50):
            if i % 3 == 0:
                self.put_item(f"default-{i}")
            elif i % 3 == 1:
                self.kinesis.put_record(StreamName=STREAM, Data=b"x", PartitionKey="p")
            else:
                self.sqs.send_message(QueueUrl=self.queue_url, MessageBody="x")
        answer = self.faults()
        self.assertEqual(answer["injected"], dict.fromkeys(answer["kinds"], 0))
        self.assertEqual(answer["by_operation"], {})
        self.assertGreaterEqual(answer["requests"], 50)

    def test_2_concurrent_puts_all_land(self):
        # moto finds the next sequence number by copying the shard's keys: the longer the
        # shard, the wider the window in which two unserialised puts take the same number.
        stream, prefill, threads_count, per_thread = "concurrency", 8000, 8, 50
        self.kinesis.create_stream(StreamName=stream, ShardCount=1)
        for _ in range(prefill // 500):
            self.kinesis.put_records(StreamName=stream, Records=[{"Data": b"prefill", "PartitionKey": "p"}] * 500)

        for round_number in range(3):
            clients = [self.client("kinesis") for _ in range(threads_count)]
            start = threading.Barrier(threads_count)
            failures = []

            def put(thread, client):
                start.wait()
                records = [
                    {"Data": f"{round_number}-{thread}-{i}".encode(), "PartitionKey": f"{thread}-{i}"}
                    for i in range(per_thread)
                ]
                try:
                    answer = client.put_records(StreamName=stream, Records=records)
                    if answer["FailedRecordCount"]:
                        failures.append(answer)
                except Exception as error:  # reported below, with the round
                    failures.append(error)

            threads = [threading.Thread(target=put, args=(t, c)) for t, c in enumerate(clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=20)
            self.assertEqual(failures, [], f"round {round_number}")

            records = self.read_shard(stream)
            this_round = [r for r in records if r["Data"].startswith(f"{round_number}-".encode())]
            sent = [(t, i) for t in range(threads_count) for i in range(per_thread)]
            expected = {f"{round_number}-{t}-{i}".encode() for t, i in sent}
            self.assertEqual(len(this_round), threads_count * per_thread, f"round {round_number}")
            self.assertEqual({r["Data"] for r in this_round}, expected, f"round {round_number}")
            self.assertEqual(len(records), prefill + threads_count * per_thread * (round_number + 1))
            self.assertEqual(len({r["SequenceNumber"] for r in records}), len(records), f"round {round_number}")

    def test_3_throttle(self):
        self.set_faults(rate=1.0, seed=7, kinds=["throttle"], reset_counts=True)

        with self.assertRaises(ClientError) as caught:
            self.put_item("throttled")
        self.assertEqual(error_code(caught.exception), "ProvisionedThroughputExceededException")
        self.assertEqual(http_status(caught.exception), 400)

        transaction = [{"Put": {"TableName": TABLE, "Item": {"pk": {"S": f"tx-{i}"}}}} for i in range(3)]
        seen = set()
        attempts = 0
        while seen != {"TransactionCanceledException", "ThrottlingException"} and attempts < 30:
            attempts += 1
            with self.assertRaises(ClientError) as caught:
                self.dynamodb.transact_write_items(TransactItems=transaction)
            code = error_code(caught.exception)
            self.assertIn(code, {"TransactionCanceledException", "ThrottlingException"})
            seen.add(code)
            if code == "TransactionCanceledException":
                reasons = [reason["Code"] for reason in caught.exception.response["CancellationReasons"]]
                self.assertEqual(len(reasons), 3)
                self.assertEqual(sorted(reasons), ["None", "None", "TransactionConflict"])
        self.assertEqual(seen, {"TransactionCanceledException", "ThrottlingException"})

        with self.assertRaises(ClientError) as caught:
            self.kinesis.put_records(StreamName=STREAM, Records=[{"Data": b"x", "PartitionKey": "p"}])
        self.assertEqual(error_code(caught.exception), "ProvisionedThroughputExceededException")
        self.assertIn(STREAM, caught.exception.response["Error"]["Message"])

        with self.assertRaises(ClientError) as caught:
            self.sqs.send_message(QueueUrl=self.queue_url, MessageBody="x")
        self.assertEqual(error_code(caught.exception), "ThrottlingException")
        self.assertEqual(http_status(caught.exception), 400)

        with self.assertRaises(ClientError) as caught:
            self.s3.put_object(Bucket=BUCKET, Key="k", Body=b"x")
        self.assertEqual(error_code(caught.exception), "SlowDown")
        self.assertEqual(http_status(caught.exception), 503)

        with self.assertRaises(ClientError) as caught:
            self.cloudformation.list_stacks()
        self.assertEqual(error_code(caught.exception), "Throttling")

        answer = self.faults()
        calls = 5 + attempts
        self.assertEqual(answer["requests"], calls)
        self.assertEqual(
            answer["injected"], {"throttle": calls, "server_error": 0, "reset": 0, "lost_response": 0}
        )
        self.assertEqual(
            answer["by_operation"],
            {
                "DynamoDB_20120810.PutItem": {"throttle": 1},
                "DynamoDB_20120810.TransactWriteItems": {"throttle": attempts},
                "Kinesis_20131202.PutRecords": {"throttle": 1},
                "AmazonSQS.SendMessage": {"throttle": 1},
                "s3.PUT": {"throttle": 1},
                "cloudformation.ListStacks": {"throttle": 1},
            },
        )

        # Throttled calls never reached moto.
        self.control("POST", {"rate": 0})
        self.assertFalse(self.item_exists("throttled"))
        self.assertFalse(any(self.item_exists(f"tx-{i}") for i in range(3)))

    def test_4_server_error(self):
        self.set_faults(rate=1.0, kinds=["server_error"], reset_counts=True)
        calls = [
            (lambda: self.put_item("server-error"), "InternalServerError"),
            (
                lambda: self.kinesis.put_records(StreamName=STREAM, Records=[{"Data": b"x", "PartitionKey": "p"}]),
                "InternalFailure",
            ),
            (lambda: self.sqs.send_message(QueueUrl=self.queue_url, MessageBody="x"), "InternalError"),
            (lambda: self.s3.put_object(Bucket=BUCKET, Key="k", Body=b"x"), "InternalError"),
            (lambda: self.cloudformation.list_stacks(), "InternalFailure"),
        ]
        for call, expected_code in calls:
            with self.subTest(expected_code=expected_code), self.assertRaises(ClientError) as caught:
                call()
            self.assertEqual(error_code(caught.exception), expected_code)
            self.assertEqual(http_status(caught.exception), 500)
        answer = self.faults()
        self.assertEqual(answer["injected"]["server_error"], len(calls))
        self.assertEqual(answer["requests"], len(calls))
        self.control("POST", {"rate": 0})
        self.assertFalse(self.item_exists("server-error"))

    def test_5_reset_drops_the_connection_before_moto(self):
        self.set_faults(rate=1.0, kinds=["reset"], reset_counts=True)
        with self.assertRaises(HTTPClientError):
            self.put_item("reset-sdk")
        self.assertEqual(self.raw_put_item("reset-raw"), b"")
        self.assertEqual(self.faults()["by_operation"], {"DynamoDB_20120810.PutItem": {"reset": 2}})
        self.control("POST", {"rate": 0})
        self.assertFalse(self.item_exists("reset-sdk"))
        self.assertFalse(self.item_exists("reset-raw"))

    def test_6_lost_response_takes_effect_unanswered(self):
        self.set_faults(rate=1.0, kinds=["lost_response"], reset_counts=True)
        with self.assertRaises(HTTPClientError):
            self.put_item("lost-sdk")
        self.assertEqual(self.raw_put_item("lost-raw"), b"")
        self.assertEqual(self.faults()["by_operation"], {"DynamoDB_20120810.PutItem": {"lost_response": 2}})
        self.control("POST", {"rate": 0})
        self.assertTrue(self.item_exists("lost-sdk"))
        self.assertTrue(self.item_exists("lost-raw"))

    def test_7_counters_match_what_clients_saw_and_repeat_with_the_seed(self):
        def run(prefix):
            self.set_faults(rate=0.5, seed=11, reset_counts=True)
            outcomes = []
            for i in range(40):
                try:
                    self.put_item(f"{prefix}-{i}")
                    outcomes.append(None)
                except ClientError as error:
                    outcomes.append({500: "server_error", 400: "throttle"}[http_status(error)])
                except HTTPClientError:
                    outcomes.append("dropped")  # reset or lost_response: told apart below
            counts = self.faults()
            self.control("POST", {"rate": 0})
            written = [self.item_exists(f"{prefix}-{i}") for i in range(len(outcomes))]
            for outcome, item_written in zip(outcomes, written):
                if outcome != "dropped":  # answered calls: written exactly when they succeeded
                    self.assertEqual(item_written, outcome is None, outcome)
            dropped = {True: "lost_response", False: "reset"}
            outcomes = [dropped[w] if o == "dropped" else o for o, w in zip(outcomes, written)]
            return outcomes, counts

        outcomes, counts = run("mixed")
        injected = {kind: outcomes.count(kind) for kind in counts["injected"]}
        self.assertEqual(counts["requests"], 40)
        self.assertEqual(counts["injected"], injected)
        self.assertEqual(
            counts["by_operation"], {"DynamoDB_20120810.PutItem": {k: n for k, n in injected.items() if n}}
        )
        self.assertTrue(all(injected.values()), f"rate 0.5 over 40 calls should hit every kind: {injected}")

        again, _ = run("again")
        self.assertEqual(again, outcomes)

    def test_9_a_cancelled_transaction_leaves_every_item_as_it_was(self):
        self.dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": "tx-kept"}, "n": {"N": "1"}})
        self.dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": "tx-taken"}})
        transaction = [
            {"Put": {"TableName": TABLE, "Item": {"pk": {"S": "tx-new"}}}},
            {"Update": {"TableName": TABLE, "Key": {"pk": {"S": "tx-kept"}}, "UpdateExpression": "ADD n :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}}}},
            {"Put": {"TableName": TABLE, "Item": {"pk": {"S": "tx-taken"}, "x": {"S": "y"}},
                     "ConditionExpression": "attribute_not_exists(pk)"}},
        ]
        with self.assertRaises(ClientError) as raised:
            self.dynamodb.transact_write_items(TransactItems=transaction)
        self.assertEqual(raised.exception.response["Error"]["Code"], "TransactionCanceledException")
        get = lambda pk: self.dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": pk}}).get("Item")
        self.assertIsNone(get("tx-new"), "a put of the cancelled transaction was undone")
        self.assertEqual(get("tx-kept")["n"], {"N": "1"}, "an update of the cancelled transaction was undone")
        self.assertEqual(get("tx-taken"), {"pk": {"S": "tx-taken"}})
        # And a transaction that goes through writes everything.
        self.dynamodb.transact_write_items(TransactItems=transaction[:2])
        self.assertIsNotNone(get("tx-new"))
        self.assertEqual(get("tx-kept")["n"], {"N": "2"})

    def test_8_bad_settings_are_refused(self):
        for settings in ({"rate": 2}, {"rate": 0.1, "kinds": ["flood"]}, {"rate": 0.1, "extra": 1}, {}):
            with self.subTest(settings=settings):
                status, answer = self.control("POST", settings)
                self.assertEqual(status, 400, answer)
        self.assertEqual(self.faults()["rate"], 0)

    def test_9_b_get_records_reads_a_long_shard_from_any_position(self):
        stream, total = "long-shard", 6000
        self.kinesis.create_stream(StreamName=stream, ShardCount=1)
        for start in range(0, total, 500):
            records = [{"Data": f"r{i}".encode(), "PartitionKey": f"p{i}"} for i in range(start, start + 500)]
            answer = self.kinesis.put_records(StreamName=stream, Records=records)
            self.assertEqual(answer["FailedRecordCount"], 0)
        shard = "shardId-000000000000"

        def iterator(kind, sequence_number=None):
            extra = {"StartingSequenceNumber": sequence_number} if sequence_number else {}
            return self.kinesis.get_shard_iterator(
                StreamName=stream, ShardId=shard, ShardIteratorType=kind, **extra
            )["ShardIterator"]

        records = self.read_shard(stream)
        self.assertEqual([r["Data"] for r in records], [f"r{i}".encode() for i in range(total)])
        numbers = [int(r["SequenceNumber"]) for r in records]
        self.assertEqual(numbers, sorted(set(numbers)))

        # A page at a time with a limit, from the middle.
        middle = records[4321]["SequenceNumber"]
        page = self.kinesis.get_records(ShardIterator=iterator("AT_SEQUENCE_NUMBER", middle), Limit=7)
        self.assertEqual([r["Data"] for r in page["Records"]], [f"r{i}".encode() for i in range(4321, 4328)])
        self.assertGreaterEqual(page["MillisBehindLatest"], 0)
        page = self.kinesis.get_records(ShardIterator=page["NextShardIterator"], Limit=3)
        self.assertEqual([r["Data"] for r in page["Records"]], [b"r4328", b"r4329", b"r4330"])
        page = self.kinesis.get_records(ShardIterator=iterator("AFTER_SEQUENCE_NUMBER", middle), Limit=2)
        self.assertEqual([r["Data"] for r in page["Records"]], [b"r4322", b"r4323"])

        # The tip: nothing after the last record, nothing behind.
        tip = self.kinesis.get_records(ShardIterator=iterator("AFTER_SEQUENCE_NUMBER", records[-1]["SequenceNumber"]))
        self.assertEqual((tip["Records"], tip["MillisBehindLatest"]), ([], 0))
        last = self.kinesis.get_records(ShardIterator=iterator("AT_SEQUENCE_NUMBER", records[-1]["SequenceNumber"]))
        self.assertEqual([r["Data"] for r in last["Records"]], [f"r{total - 1}".encode()])
        self.assertEqual(last["MillisBehindLatest"], 0)

        # LATEST sees only what comes after it, and reading on from an empty page still works.
        latest = iterator("LATEST")
        empty = self.kinesis.get_records(ShardIterator=latest)
        self.assertEqual(empty["Records"], [])
        time.sleep(0.3)
        self.kinesis.put_records(StreamName=stream, Records=[{"Data": b"new", "PartitionKey": "p"}])
        fresh = self.kinesis.get_records(ShardIterator=empty["NextShardIterator"])
        self.assertEqual([r["Data"] for r in fresh["Records"]], [b"new"])

        # Records put 0.3 s before the newest one are that far behind it.
        behind = self.kinesis.get_records(ShardIterator=iterator("TRIM_HORIZON"), Limit=1)
        self.assertGreaterEqual(behind["MillisBehindLatest"], 250)
        described = self.kinesis.list_shards(StreamName=stream)["Shards"][0]
        self.assertEqual(described["SequenceNumberRange"]["StartingSequenceNumber"], records[0]["SequenceNumber"])


    def test_9_c_a_transaction_repeated_with_its_client_token_is_applied_once(self):
        def add(token, amount):
            return self.dynamodb.transact_write_items(
                ClientRequestToken=token,
                TransactItems=[
                    {
                        "Update": {
                            "TableName": TABLE,
                            "Key": {"pk": {"S": "idempotent"}},
                            "UpdateExpression": "ADD n :n",
                            "ExpressionAttributeValues": {":n": {"N": str(amount)}},
                        }
                    }
                ],
            )

        add("request-1", 5)
        add("request-1", 5)  # a retry after a lost answer: success, nothing added
        add("request-2", 5)
        item = self.dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": "idempotent"}})["Item"]
        self.assertEqual(item["n"], {"N": "10"})
        with self.assertRaises(self.dynamodb.exceptions.IdempotentParameterMismatchException):
            add("request-1", 6)


RULES_TABLE = "rules-table"
LARGEST = "9." + "9" * 37 + "E+125"  # 38 significant digits, the largest magnitude
TOO_MANY_DIGITS = "Attempting to store more than 38 significant digits in a Number"
OVERFLOW = "Number overflow. Attempting to store a number with magnitude larger than supported range"
UNDERFLOW = "Number underflow. Attempting to store a number with magnitude smaller than supported range"
ITEM_TOO_LARGE = "Item size has exceeded the maximum allowed size"
UPDATE_TOO_LARGE = "Item size to update has exceeded the maximum allowed size"
MAX_ITEM_SIZE = 400 * 1024


class DynamoDBRulesTest(LauncherTestCase):
    """What DynamoDB refuses to store, refused by the launcher on every write path, through a
    real server and boto3; and the boundary values DynamoDB still takes, taken."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.dynamodb = cls.client("dynamodb")
        cls.dynamodb.create_table(
            TableName=RULES_TABLE,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )

    def setUp(self):
        self.key = {"pk": {"S": self.id().rsplit(".", 1)[-1]}}

    def stored(self, key=None):
        answer = self.dynamodb.get_item(TableName=RULES_TABLE, Key=key or self.key, ConsistentRead=True)
        return answer.get("Item")

    def put(self, **attributes):
        self.dynamodb.put_item(TableName=RULES_TABLE, Item={**self.key, **attributes})

    def update(self, expression, values, names=None, key=None):
        request = {"TableName": RULES_TABLE, "Key": key or self.key, "UpdateExpression": expression,
                   "ExpressionAttributeValues": values}
        if names:
            request["ExpressionAttributeNames"] = names
        return self.dynamodb.update_item(**request, ReturnValues="ALL_NEW")["Attributes"]

    def assert_refused(self, message, call, *args, **kwargs):
        with self.assertRaises(ClientError) as raised:
            call(*args, **kwargs)
        self.assertEqual(error_code(raised.exception), "ValidationException")
        self.assertEqual(http_status(raised.exception), 400)
        self.assertEqual(raised.exception.response["Error"]["Message"], message)

    @staticmethod
    def padded(key, size, name="blob"):
        """An item of `key` whose DynamoDB size is exactly `size`, filled by a string."""
        used = sum(len(k) + len(v["S"]) for k, v in key.items()) + len(name)
        return {**key, name: {"S": "x" * (size - used)}}

    # --- numbers ---

    def test_put_refuses_numbers_dynamodb_cannot_store(self):
        refused = [
            ("1" * 39, TOO_MANY_DIGITS),
            ("-1.23456789012345678901234567890123456789", TOO_MANY_DIGITS),
            ("0.000" + "1" * 39, TOO_MANY_DIGITS),
            ("1E+126", OVERFLOW),
            ("-1E+126", OVERFLOW),
            ("10" + "0" * 125, OVERFLOW),
            ("1E-131", UNDERFLOW),
            ("-0.99E-130", UNDERFLOW),
        ]
        for number, message in refused:
            with self.subTest(number=number):
                self.assert_refused(message, self.put, n={"N": number})
                self.assertIsNone(self.stored())
        nested = [{"M": {"a": {"L": [{"N": "1E+126"}]}}}, {"NS": ["1", "1E-131"]}, {"L": [{"N": "1" * 39}]}]
        for value in nested:
            with self.subTest(value=value):
                self.assertRaises(ClientError, self.put, n=value)
                self.assertIsNone(self.stored())

    def test_put_takes_the_numbers_at_the_edges_of_the_range(self):
        taken = ["1" * 38, "1" * 38 + "0" * 50, "0.000" + "1" * 38, LARGEST, "-" + LARGEST, "1E-130", "-1E-130",
                 "1E+125", "0", "-0", "0E+500", "1.0000000000000000000000000000000000000000000000"]
        for number in taken:
            with self.subTest(number=number):
                self.put(n={"N": number})
                self.assertEqual(self.stored()["n"], {"N": number})

    def test_update_refuses_a_sum_that_needs_more_than_38_digits(self):
        # 1E-100 written out as a decimal has one significant digit: DynamoDB keeps it. Adding
        # 5 gives 101 significant digits, which it cannot.
        tiny = "0." + "0" * 99 + "1"
        self.put(sum={"N": tiny}, events={"N": "1"})
        self.assert_refused(TOO_MANY_DIGITS, self.update, "ADD events :one, #s :five",
                            {":one": {"N": "1"}, ":five": {"N": "5"}}, {"#s": "sum"})
        self.assertEqual(self.stored(), {**self.key, "sum": {"N": tiny}, "events": {"N": "1"}},
                         "a refused update leaves the whole item as it was")
        self.assert_refused(TOO_MANY_DIGITS, self.update, "SET #s = #s + :five", {":five": {"N": "5"}},
                            {"#s": "sum"})
        self.assertEqual(self.stored()["sum"], {"N": tiny})

    def test_update_refuses_a_sum_out_of_range(self):
        self.put(big={"N": LARGEST}, small={"N": "1E-130"})
        self.assert_refused(OVERFLOW, self.update, "ADD big :n", {":n": {"N": LARGEST}})
        self.assert_refused(OVERFLOW, self.update, "SET big = big - :n", {":n": {"N": "-" + LARGEST}})
        self.assertEqual(self.stored()["big"], {"N": LARGEST})
        # A difference smaller than 1E-130 but not zero.
        self.update("SET small = :n", {":n": {"N": "1.1E-130"}})
        self.assert_refused(UNDERFLOW, self.update, "ADD small :n", {":n": {"N": "-1E-130"}})
        self.assertEqual(self.stored()["small"], {"N": "1.1E-130"})

    def test_update_sums_are_exact_up_to_38_digits(self):
        # moto's own arithmetic rounds to 28 digits.
        self.put(sum={"N": "12345678901234567890.123456789"})
        self.assertEqual(self.update("ADD #s :one", {":one": {"N": "1"}}, {"#s": "sum"})["sum"],
                         {"N": "12345678901234567891.123456789"})
        self.put(sum={"N": "1" * 37 + ".5"})
        self.assertEqual(self.update("ADD #s :half", {":half": {"N": "0.5"}}, {"#s": "sum"})["sum"],
                         {"N": "1" * 36 + "2.0"})
        self.put(big={"N": LARGEST})
        self.assertEqual(self.update("ADD big :n", {":n": {"N": "-" + LARGEST}})["big"], {"N": "0E+88"})

    def test_a_request_value_dynamodb_cannot_store_is_refused_up_front(self):
        self.put(n={"N": "1"})
        for verb, call in [
            ("update", lambda v: self.update("SET n = :v", {":v": v})),
            ("conditional put", lambda v: self.dynamodb.put_item(
                TableName=RULES_TABLE, Item=self.key, ConditionExpression="n < :v",
                ExpressionAttributeValues={":v": v})),
            ("conditional delete", lambda v: self.dynamodb.delete_item(
                TableName=RULES_TABLE, Key=self.key, ConditionExpression="n < :v",
                ExpressionAttributeValues={":v": v})),
        ]:
            with self.subTest(verb=verb):
                self.assert_refused(
                    f"ExpressionAttributeValues contains invalid value: {TOO_MANY_DIGITS} for key :v",
                    call, {"N": "1" * 39})
                self.assertEqual(self.stored(), {**self.key, "n": {"N": "1"}})

    # --- item size ---

    def test_put_takes_400_kb_and_refuses_a_byte_more(self):
        self.dynamodb.put_item(TableName=RULES_TABLE, Item=self.padded(self.key, MAX_ITEM_SIZE))
        self.assertEqual(len(self.stored()["blob"]["S"]), MAX_ITEM_SIZE - len("pk") - len(self.key["pk"]["S"]) - 4)
        other = {"pk": {"S": "one-byte-more"}}
        self.assert_refused(ITEM_TOO_LARGE, self.dynamodb.put_item, TableName=RULES_TABLE,
                            Item=self.padded(other, MAX_ITEM_SIZE + 1))
        self.assertIsNone(self.stored(other))

    def test_the_size_counts_names_numbers_and_nesting_as_dynamodb_does(self):
        # "12345" counts 3 bytes for its digits and 1 more; the map 3, plus per element 1 and its name.
        value = {"M": {"ab": {"N": "12345"}, "c": {"L": [{"BOOL": True}, {"NULL": True}]}}}
        nested = 3 + (1 + 2 + 4) + (1 + 1 + 3 + (1 + 1) + (1 + 1))
        key = {"pk": {"S": "nested"}}
        item = {**self.padded(key, MAX_ITEM_SIZE - len("m") - nested), "m": value}
        self.dynamodb.put_item(TableName=RULES_TABLE, Item=item)
        self.assertEqual(self.stored(key)["m"], value)
        item["m"]["M"]["ab"] = {"N": "1234567"}  # one byte more
        self.assert_refused(ITEM_TOO_LARGE, self.dynamodb.put_item, TableName=RULES_TABLE, Item=item)

    def test_update_refuses_an_item_grown_past_400_kb_and_leaves_it_as_it_was(self):
        item = self.padded(self.key, MAX_ITEM_SIZE - len("n") - 2)  # room for n = 1
        self.dynamodb.put_item(TableName=RULES_TABLE, Item=item)
        self.update("ADD n :one", {":one": {"N": "1"}})
        self.assert_refused(UPDATE_TOO_LARGE, self.update, "ADD n :v, m :one", {":v": {"N": "100"},
                            ":one": {"N": "1"}})
        self.assert_refused(UPDATE_TOO_LARGE, self.update, "SET tag = :s", {":s": {"S": "x"}})
        self.assertEqual(self.stored(), {**item, "n": {"N": "1"}})

    def test_an_update_of_a_new_key_that_is_refused_writes_nothing(self):
        self.assert_refused(UPDATE_TOO_LARGE, self.update, "SET #b = :s", {":s": {"S": "x" * MAX_ITEM_SIZE}},
                            {"#b": "blob"})
        self.assert_refused(OVERFLOW, self.update, "SET n = :a, m = :b + :b", {":a": {"N": "1"}, ":b": {"N": LARGEST}})
        self.assert_refused(OVERFLOW, self.update, "SET n = :a + :a", {":a": {"N": LARGEST}})
        self.assertIsNone(self.stored())

    # --- batches and transactions ---

    def test_a_batch_with_an_item_dynamodb_refuses_writes_nothing(self):
        keys = [{"pk": {"S": f"batch-{i}"}} for i in range(3)]
        for bad, message in [({"N": "1E+126"}, OVERFLOW), ({"S": "x" * MAX_ITEM_SIZE}, ITEM_TOO_LARGE)]:
            with self.subTest(message=message):
                requests = [{"PutRequest": {"Item": {**key, "v": {"N": "1"}}}} for key in keys[:2]]
                requests.append({"PutRequest": {"Item": {**keys[2], "v": bad}}})
                self.assert_refused(message, self.dynamodb.batch_write_item, RequestItems={RULES_TABLE: requests})
                self.assertEqual([self.stored(key) for key in keys], [None] * 3)
        requests = [{"PutRequest": {"Item": self.padded(key, MAX_ITEM_SIZE)}} for key in keys]
        self.dynamodb.batch_write_item(RequestItems={RULES_TABLE: requests})
        self.assertTrue(all(self.stored(key) for key in keys))

    def assert_cancelled(self, actions, position, message):
        with self.assertRaises(ClientError) as raised:
            self.dynamodb.transact_write_items(TransactItems=actions)
        error = raised.exception.response
        self.assertEqual(error["Error"]["Code"], "TransactionCanceledException")
        codes = ["ValidationError" if i == position else "None" for i in range(len(actions))]
        self.assertEqual(
            error["Error"]["Message"],
            f"Transaction cancelled, please refer cancellation reasons for specific reasons [{', '.join(codes)}]",
        )
        reasons = error["CancellationReasons"]
        self.assertEqual([reason["Code"] for reason in reasons], codes)
        self.assertEqual(reasons[position]["Message"], message)

    def test_a_transaction_with_a_refused_action_is_cancelled_at_that_action(self):
        counter = {"pk": {"S": "tx-counter"}}
        new = {"pk": {"S": "tx-new"}}
        self.dynamodb.put_item(TableName=RULES_TABLE, Item={**counter, "sum": {"N": LARGEST}, "n": {"N": "1"}})
        before = self.stored(counter)
        put_new = {"Put": {"TableName": RULES_TABLE, "Item": {**new, "v": {"N": "1"}}}}
        count = {"Update": {"TableName": RULES_TABLE, "Key": counter, "UpdateExpression": "ADD n :one",
                            "ExpressionAttributeValues": {":one": {"N": "1"}}}}
        overflow = {"Update": {"TableName": RULES_TABLE, "Key": counter, "UpdateExpression": "ADD #s :v",
                               "ExpressionAttributeNames": {"#s": "sum"},
                               "ExpressionAttributeValues": {":v": {"N": LARGEST}}}}
        self.assert_cancelled([put_new, overflow], 1, OVERFLOW)
        big = {"Put": {"TableName": RULES_TABLE, "Item": self.padded(new, MAX_ITEM_SIZE + 1)}}
        self.assert_cancelled([count, big], 1, ITEM_TOO_LARGE)
        digits = {"Put": {"TableName": RULES_TABLE, "Item": {**new, "v": {"N": "1" * 39}}}}
        self.assert_cancelled([digits, count], 0, TOO_MANY_DIGITS)
        grow = {"Update": {"TableName": RULES_TABLE, "Key": counter, "UpdateExpression": "SET #b = :s",
                           "ExpressionAttributeNames": {"#b": "blob"},
                           "ExpressionAttributeValues": {":s": {"S": "x" * MAX_ITEM_SIZE}}}}
        self.assert_cancelled([put_new, grow], 1, UPDATE_TOO_LARGE)
        self.assertEqual(self.stored(counter), before)
        self.assertIsNone(self.stored(new))
        # A request value DynamoDB cannot store refuses the call itself.
        bad_value = {"Update": {**count["Update"], "ExpressionAttributeValues": {":one": {"N": "1E-131"}}}}
        self.assert_refused(f"ExpressionAttributeValues contains invalid value: {UNDERFLOW} for key :one",
                            self.dynamodb.transact_write_items, TransactItems=[put_new, bad_value])
        # At the edges, the transaction goes through.
        at_edge = {"Put": {"TableName": RULES_TABLE, "Item": self.padded(new, MAX_ITEM_SIZE)}}
        self.dynamodb.transact_write_items(TransactItems=[at_edge, count])
        self.assertEqual(self.stored(counter)["n"], {"N": "2"})
        self.assertIsNotNone(self.stored(new))

    def test_partiql_writes_keep_the_rules(self):
        self.put(n={"N": "1"})
        statement = f"UPDATE \"{RULES_TABLE}\" SET n = ? WHERE pk = '{self.key['pk']['S']}'"
        self.assert_refused(OVERFLOW, self.dynamodb.execute_statement, Statement=statement,
                            Parameters=[{"N": "1E+126"}])
        self.assertEqual(self.stored()["n"], {"N": "1"})
        self.dynamodb.execute_statement(Statement=statement, Parameters=[{"N": LARGEST}])
        self.assertEqual(self.stored()["n"], {"N": LARGEST})


class RulesTest(unittest.TestCase):
    """The rules themselves, on values as DynamoDB's JSON writes them."""

    @classmethod
    def setUpClass(cls):
        sys.path.insert(0, str(LAUNCHER.parent))
        import dynamodb_rules

        cls.rules = dynamodb_rules

    def test_significant_digits_and_the_power_of_the_leading_digit(self):
        cases = {"0": (0, 0), "-0.000": (0, 0), "100": (1, 2), "123.450": (5, 2), "0.00120": (2, -3),
                 ".5": (1, -1), "5.": (1, 0), "+1e-130": (1, -130), "12E+124": (2, 125), "x": None, "": None,
                 "1e": None, "--1": None}
        for text, expected in cases.items():
            with self.subTest(text=text):
                self.assertEqual(self.rules.significant_digits_and_power(text), expected)

    def test_number_sizes(self):
        for text, size in {"1": 2, "12": 2, "123": 3, "100000": 2, "-1234.5": 4, "0": 2, "1" * 38: 20}.items():
            with self.subTest(text=text):
                self.assertEqual(self.rules.number_size(text), size)

    def test_malformed_items_are_left_for_moto_to_report(self):
        self.assertIsNone(self.rules.item_error({"a": {"N": "not a number"}}))
        self.assertIsNone(self.rules.item_error({"a": {}}))
        self.assertIsNone(self.rules.item_error({"a": "text"}))


class ExitWithParentTest(unittest.TestCase):
    """`--exit-with-parent`: the launcher ends with the process that started it."""

    def wait_for_port(self, port, process):
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            self.assertIsNone(process.poll(), "the launcher exited before it served")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.fail("the launcher did not start")

    @staticmethod
    def is_running(pid):
        """Whether `pid` is a live process (a zombie has ended; no one may be left to reap it)."""
        try:
            with open(f"/proc/{pid}/stat") as stat:
                return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    def test_the_launcher_exits_when_its_standard_input_closes(self):
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, str(LAUNCHER), "-H", "127.0.0.1", "-p", str(port), "--exit-with-parent"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        self.addCleanup(lambda: process.poll() is None and (process.kill(), process.wait()))
        self.wait_for_port(port, process)
        process.stdin.write(b"anything written is ignored\n")
        process.stdin.flush()
        time.sleep(0.3)
        self.assertIsNone(process.poll(), "the launcher exited while its standard input was open")
        process.stdin.close()
        self.assertEqual(process.wait(timeout=5), 0)
        self.assertIn(b"standard input closed", process.stderr.read())
        process.stderr.close()

    def test_the_launcher_exits_when_the_process_that_started_it_is_killed(self):
        port = free_port()
        # A parent that starts the launcher as the local stack does, says its pid, and waits.
        parent_code = (
            "import subprocess, sys, time\n"
            f"launcher = subprocess.Popen([sys.executable, {str(LAUNCHER)!r}, '-H', '127.0.0.1', '-p', '{port}',"
            " '--exit-with-parent'], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
            "print(launcher.pid, flush=True)\n"
            "time.sleep(120)\n"
        )
        parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE)
        self.addCleanup(lambda: parent.poll() is None and (parent.kill(), parent.wait()))
        launcher_pid = int(parent.stdout.readline())
        parent.stdout.close()
        self.addCleanup(lambda: self.is_running(launcher_pid) and os.kill(launcher_pid, 9))
        self.wait_for_port(port, parent)
        parent.kill()  # SIGKILL: nothing of the parent's own code runs
        parent.wait()
        deadline = time.monotonic() + 5
        while self.is_running(launcher_pid):
            self.assertLess(time.monotonic(), deadline, "the launcher outlived the process that started it")
            time.sleep(0.05)


class ShardPatchTest(unittest.TestCase):
    """The patched Shard methods against moto's own, on the same shards."""

    @classmethod
    def setUpClass(cls):
        sys.path.insert(0, str(LAUNCHER.parent))
        import moto_server  # patches moto in this process

        cls.launcher = moto_server
        from moto.kinesis.models import Shard

        cls.Shard = Shard

    def shard(self, count):
        shard = self.Shard(0, 0, 2**128)
        for i in range(count):
            shard.put_record(f"p{i}", "ZGF0YQ==", None)
        # Arrival times a millisecond apart (backwards from now), so that lag is visible.
        start = datetime.now(timezone.utc) - timedelta(seconds=count / 1000)
        for i, record in enumerate(shard.records.values()):
            record.created_at_datetime = start + timedelta(milliseconds=i)
            record.created_at = record.created_at_datetime.timestamp()
        return shard

    def assert_same_reads(self, shard, positions, limits):
        for position in positions:
            for limit in limits:
                with self.subTest(position=position, limit=limit):
                    expected = self.launcher._get_records(shard, str(position), limit)
                    self.assertEqual(shard.get_records(str(position), limit), expected)

    def test_reads_match_moto_from_every_kind_of_position(self):
        count = 300
        shard = self.shard(count)
        positions = [-5, -1, 0, 1, 2, 150, count - 1, count, count + 10]
        self.assert_same_reads(shard, positions, [None, 0, -1, 1, 7, 100, count, count + 1, True])
        self.assert_same_reads(self.shard(0), [-1, 0, 3], [None, 1, 10])

    def test_odd_limits_and_gaps_take_moto_s_own_path(self):
        shard = self.shard(50)
        self.assert_same_reads(shard, [0, 10], [2.0, 2.5, "3"])
        gapped = self.Shard(0, 0, 2**128)
        gapped.records = OrderedDict((n, record) for n, record in self.shard(40).records.items() if n % 3)
        self.assert_same_reads(gapped, [0, 5, 38, 40], [None, 1, 4])

    def test_first_and_last_sequence_numbers(self):
        empty = self.Shard(0, 0, 1)
        self.assertEqual((empty.get_min_sequence_number(), empty.get_max_sequence_number()), (0, 0))
        shard = self.shard(25)
        self.assertEqual((shard.get_min_sequence_number(), shard.get_max_sequence_number()), (1, 25))
        self.assertEqual(shard.put_record("p", "ZGF0YQ==", None), "26")

    def test_a_mapping_on_the_stream_is_left_to_the_local_poller(self):
        from moto.kinesis.models import Stream

        stream = Stream("s", 1, None, None, "123456789012", "us-east-1")
        # moto would hand the record to this mapping's function (and fail to find it).
        stream.lambda_event_source_mappings["arn:aws:kinesis:us-east-1:123456789012:stream/s"] = object()
        sequence_number, shard_id = stream.put_record("p", None, "ZGF0YQ==")
        self.assertEqual((sequence_number, shard_id), ("1", "shardId-000000000000"))
        self.assertEqual(len(stream.shards[shard_id].records), 1)

    def test_a_patch_refuses_code_it_was_not_written_for(self):
        with self.assertRaisesRegex(RuntimeError, "not the code the patch"):
            self.launcher.expect_source(self.Shard.get_records, "0000000000000000")


class BackendPatchTestCase(unittest.TestCase):
    """Imports the launcher (which patches moto in this process) and makes DynamoDB backends
    with table `t`: key `pk` (and sort key `sk`), index `ByUser` on `user_pk`."""

    @classmethod
    def setUpClass(cls):
        sys.path.insert(0, str(LAUNCHER.parent))
        import moto_server

        cls.launcher = moto_server
        from moto.dynamodb.models import DynamoDBBackend

        cls.Backend = DynamoDBBackend

    def backend(self, range_key=True):
        backend = self.Backend("us-east-1", "123456789012")
        schema = [{"AttributeName": "pk", "KeyType": "HASH"}]
        if range_key:
            schema.append({"AttributeName": "sk", "KeyType": "RANGE"})
        backend.create_table(
            "t",
            schema=schema,
            throughput=None,
            attr=[{"AttributeName": n, "AttributeType": "S"} for n in ("pk", "sk", "user_pk")],
            global_indexes=[
                {
                    "IndexName": "ByUser",
                    "KeySchema": [{"AttributeName": "user_pk", "KeyType": "HASH"}],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
            indexes=[],
            streams=None,
            billing_mode="PAY_PER_REQUEST",
            sse_specification=None,
            tags=[],
            deletion_protection_enabled=False,
            warm_throughput=None,
        )
        return backend


class UpdatePatchTest(BackendPatchTestCase):
    """The counter path of update_item against moto's own update_item, on two equal tables
    (both without the DynamoDB rules wrapped around them, which RulesTest covers)."""

    def outcome(self, update, backend, item_key, expression, names, values, condition=None, on_failure=None):
        try:
            update(
                backend, "t", item_key, expression, names, values,
                condition_expression=condition, return_values_on_condition_check_failure=on_failure,
            )
        except Exception as error:  # compared below: type and message
            result = (type(error).__name__, str(error))
        else:
            result = None
        items = [item.to_json() for item in backend.get_table("t").all_items()]
        return result, items

    def assert_same(self, steps, setup=()):
        """Runs `steps` (key, expression, names, values) through both update_items in turn."""
        patched, moto_own = self.backend(), self.backend()
        for item in setup:
            patched.put_item("t", item)
            moto_own.put_item("t", item)
        for step in steps:
            with self.subTest(step=step):
                ours = self.outcome(self.launcher._update_item_with_counter_path, patched, *step)
                theirs = self.outcome(self.launcher._update_item, moto_own, *step)
                self.assertEqual(ours, theirs)

    def test_counter_updates_match_moto(self):
        key = {"pk": {"S": "a"}, "sk": {"S": "1"}}
        other = {"pk": {"S": "b"}, "sk": {"S": "2"}}
        add = "ADD #e :e, #t :t SET #ttl = :ttl, #first = if_not_exists(#first, :now)"
        names = {"#e": "events", "#t": "t#call", "#ttl": "expires_at", "#first": "first_ms"}

        def values(e, t, ttl, now):
            return {":e": {"N": e}, ":t": {"N": t}, ":ttl": {"N": ttl}, ":now": {"N": now}}

        self.assert_same(
            [
                (key, add, names, values("1", "2", "100", "5")),
                (key, add, names, values("3", "-2", "200", "6")),
                (key, add, names, values("0.5", "007", "300", "7")),
                (key, add, names, values("1.25", "1", "300", "8")),
                (other, "ADD #e :e", {"#e": "events"}, {":e": {"N": "10"}}),
                (other, "SET #e = :e", {"#e": "events"}, {":e": {"N": "-1"}}),
                (other, "ADD  #e   :e ,#x :x   SET #y=:y", {"#e": "events", "#x": "x", "#y": "y"},
                 {":e": {"N": "1"}, ":x": {"N": "2"}, ":y": {"N": "3"}}),
            ]
        )

    def test_updates_that_mark_the_last_record_taken_match_moto(self):
        # As the transform adds a batch to an analytics item: on condition that the item has
        # not taken these records, and marking the last it takes (a string).
        key = {"pk": {"S": "USERAGG#u"}, "sk": {"S": "D#2026-12-07"}}
        expression = "ADD #a0 :a0 SET #taken = :last"
        condition = "(attribute_not_exists(#taken) OR #taken < :first) AND attribute_not_exists(#events)"
        names = {"#a0": "events", "#taken": "w#shardId-000000000000", "#events": "events"}

        def values(first, last):
            return {":a0": {"N": "2"}, ":first": {"S": first}, ":last": {"S": last}}

        self.assert_same(
            [
                (key, expression, names, values("0011#0", "0012#0"), condition),
                # Taken already: the condition fails, with the item for the caller to read.
                (key, expression, names, values("0011#0", "0012#0"), condition, "ALL_OLD"),
                (key, "ADD #a0 :a0 SET #taken = :last", names, values("0013#0", "0014#0"),
                 "attribute_not_exists(#taken) OR #taken < :first"),
                (key, "SET #taken = :last", {"#taken": "w#s"}, {":last": {"S": "x"}}),
            ]
        )

    def test_conditional_counter_updates_match_moto(self):
        # As the transform guards a shared item's counters: absent, or each count as it knew it.
        key = {"pk": {"S": "w"}, "sk": {"S": "1"}}
        adds = "ADD #e :e, #k :k SET #ttl = :ttl"
        names = {"#e": "events", "#k": "kc#type", "#ttl": "expires_at"}

        def values(e, **known):
            return {":e": {"N": e}, ":k": {"N": "1"}, ":ttl": {"N": "100"}, **{f":{n}": {"N": v} for n, v in known.items()}}

        absent = "attribute_not_exists(#e)"
        counted = "#k = :k0 AND #e = :e0"
        self.assert_same(
            [
                (key, adds, names, values("2"), absent),
                (key, adds, names, values("2"), absent),  # exists now: refused
                (key, adds, names, values("2"), absent, "ALL_OLD"),
                (key, adds, names, values("3", k0="1", e0="2"), counted),
                (key, adds, names, values("3", k0="1", e0="2"), counted),  # stale: refused
                (key, adds, names, values("3", k0="2", e0="5"), counted, "ALL_OLD"),
                (key, adds, names, values("1", k0="2", e0="5"), counted),
                (key, adds, names, values("1"), "#e = :missing"),  # moto's error for a missing value
                (key, adds, names, values("1"), "attribute_not_exists(#e"),  # a syntax error
            ]
        )

    def test_updates_moto_refuses_are_refused_alike(self):
        key = {"pk": {"S": "a"}, "sk": {"S": "1"}}
        self.assert_same(
            [
                (key, "ADD #s :one", {"#s": "name"}, {":one": {"N": "1"}}),  # a string
                (key, "ADD #k :one", {"#k": "sk"}, {":one": {"N": "1"}}),  # the sort key
                (key, "SET #u = :one", {"#u": "user_pk"}, {":one": {"N": "1"}}),  # an index key
                (key, "ADD #a :one, #b :one", {"#a": "c", "#b": "c"}, {":one": {"N": "1"}}),  # twice
                (key, "ADD #a :missing", {"#a": "c"}, {":one": {"N": "1"}}),
                (key, "ADD #missing :one", {"#a": "c"}, {":one": {"N": "1"}}),
                (key, "ADD #a :one,", {"#a": "c"}, {":one": {"N": "1"}}),  # a syntax error
                (key, "ADD #a :oneSET #b = :one", {"#a": "c", "#b": "d"}, {":one": {"N": "1"}}),
                (key, "ADD #a :x", {"#a": "c"}, {":x": {"N": "1e3"}}),
                (key, "ADD #a :x", {"#a": "c"}, {":x": {"S": "1"}}),
                (key, "SET #a = if_not_exists(#b, :x)", {"#a": "c", "#b": "d"}, {":x": {"N": "1"}}),
                ({"pk": {"S": "a"}}, "ADD #a :x", {"#a": "c"}, {":x": {"N": "1"}}),  # no sort key
            ],
            setup=[{"pk": {"S": "a"}, "sk": {"S": "1"}, "name": {"S": "x"}}],
        )

    def test_new_items_keep_their_attributes_in_order(self):
        backend = self.backend()
        item = {"pk": {"S": "a"}, "sk": {"S": "1"}, "b": {"N": "2"}, "a": {"M": {"x": {"L": [{"S": "y"}]}}}}
        backend.put_item("t", item)
        stored = backend.get_item("t", {"pk": {"S": "a"}, "sk": {"S": "1"}}).to_json()["Attributes"]
        self.assertEqual(list(stored.items()), list(item.items()))

    def test_conditions_without_placeholders_are_parsed_once_and_still_hold(self):
        from moto.dynamodb.exceptions import ConditionalCheckFailed

        backend = self.backend()
        item = {"pk": {"S": "c"}, "sk": {"S": "1"}}
        backend.put_item("t", item, condition_expression="attribute_not_exists(pk)")
        with self.assertRaises(ConditionalCheckFailed):
            backend.put_item("t", item, condition_expression="attribute_not_exists(pk)")
        backend.put_item("t", {**item, "sk": {"S": "2"}}, condition_expression="attribute_not_exists(pk)")


class QueryPatchTest(BackendPatchTestCase):
    """Queries on the table's key against moto's own query, on the same table."""

    def both(self, backend, **query):
        """The patched query's answer and moto's own, with every item each returned."""
        from moto.dynamodb.models import table as table_models

        defaults = dict(
            range_comparison=None, range_objs=[], limit=None, exclusive_start_key=None,
            scan_index_forward=True, projection_expressions=None,
        )
        table = backend.get_table("t")

        def answer(query_method):
            items, scanned, last = query_method(table, **{**defaults, **query})
            return [item.to_json() for item in items], scanned, last

        ours = answer(table_models.Table.query)
        original_all_items = table_models.Table.all_items
        table_models.Table.all_items = self.launcher._all_items
        try:
            theirs = answer(self.launcher._query)
        finally:
            table_models.Table.all_items = original_all_items
        return ours, theirs

    def test_queries_on_the_table_key_match_moto(self):
        from moto.dynamodb.models.dynamo_type import DynamoType

        backend = self.backend()
        for pk in ("METRICS", "WINDOW#a", "EVENT#x", "A", "Z"):
            for n in (5, 1, 12, 3, 30, 2):
                backend.put_item("t", {"pk": {"S": pk}, "sk": {"S": f"SHARD#{n}"}, "n": {"N": str(n)},
                                       "user_pk": {"S": f"u{n % 3}"}})
        backend.delete_item("t", {"pk": {"S": "A"}, "sk": {"S": "SHARD#5"}})
        metrics = DynamoType({"S": "METRICS"})
        cases = [
            dict(hash_key=metrics),
            dict(hash_key=metrics, range_comparison="BEGINS_WITH", range_objs=[DynamoType({"S": "SHARD#1"})]),
            dict(hash_key=metrics, range_comparison="BETWEEN",
                 range_objs=[DynamoType({"S": "SHARD#12"}), DynamoType({"S": "SHARD#3"})]),
            dict(hash_key=metrics, scan_index_forward=False, limit=2),
            dict(hash_key=metrics, limit=2, exclusive_start_key={"pk": {"S": "METRICS"}, "sk": {"S": "SHARD#12"}}),
            dict(hash_key=DynamoType({"S": "A"})),
            dict(hash_key=DynamoType({"S": "none"})),
            dict(hash_key=DynamoType({"S": "u1"}), index_name="ByUser"),
        ]
        for case in cases:
            with self.subTest(case=case):
                ours, theirs = self.both(backend, **case)
                self.assertEqual(ours, theirs)
        self.assertEqual(len(self.both(backend, **cases[0])[0][0]), 6)
        self.assertNotIn(DynamoType({"S": "none"}), backend.get_table("t").items, "no partition was added")

    def test_a_table_without_a_sort_key_answers_its_one_item(self):
        from moto.dynamodb.models.dynamo_type import DynamoType

        backend = self.backend(range_key=False)
        for pk in ("b", "a", "c"):
            backend.put_item("t", {"pk": {"S": pk}, "v": {"S": pk * 2}})
        for pk in ("a", "b", "none"):
            with self.subTest(pk=pk):
                ours, theirs = self.both(backend, hash_key=DynamoType({"S": pk}))
                self.assertEqual(ours, theirs)

    def test_scans_still_see_every_item(self):
        backend = self.backend()
        for n in range(4):
            backend.put_item("t", {"pk": {"S": f"p{n % 2}"}, "sk": {"S": str(n)}})
        self.assertEqual(len(backend.get_table("t").all_items()), 4)


class JsonAnswerPatchTest(unittest.TestCase):
    """Compiled JSON answers against moto's own serialiser: every answer of real calls (moto
    in this process) is made both ways and compared byte for byte."""

    @classmethod
    def setUpClass(cls):
        sys.path.insert(0, str(LAUNCHER.parent))
        import moto_server
        from moto.core import responses

        cls.launcher = moto_server
        cls.responses = responses

    def setUp(self):
        self.compiled = set()  # operations the compiled path answered
        launcher = self.launcher

        def both(result, context):
            theirs = launcher._execute_result(result, context)
            ours = launcher._execute_result_compiled(result, context)
            self.assertEqual(ours, theirs, context.operation_model.name)
            answer = launcher._compiled_json_answers.get(
                (context.service_model.service_name, context.operation_model.name, context.serializer_class)
            )
            if answer is not None and not isinstance(result.result, Exception):
                answer[0] is None or answer[0](result.result)  # raises where moto's path answered
                self.compiled.add(context.operation_model.name)
            return theirs

        self.responses.ActionResult.execute_result = both
        self.addCleanup(setattr, self.responses.ActionResult, "execute_result", launcher._execute_result_compiled)
        from moto import mock_aws

        mock = mock_aws()
        mock.start()
        self.addCleanup(mock.stop)
        self.client = lambda service: boto3.client(
            service, region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
        )

    def test_dynamodb_answers_match_moto(self):
        dynamodb = self.client("dynamodb")
        dynamodb.create_table(
            TableName="t", BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}],
        )
        every_type = {
            "s": {"S": "x"}, "n": {"N": "1.50"}, "b": {"B": b"\x00\xffbytes"}, "ss": {"SS": ["a", "b"]},
            "ns": {"NS": ["1", "2"]}, "bs": {"BS": [b"x", b"y"]}, "null": {"NULL": True}, "bool": {"BOOL": False},
            "l": {"L": [{"S": "in a list"}, {"M": {"deep": {"BS": [b"z"]}}}, {"NULL": True}]},
            "m": {"M": {"inner": {"N": "7"}, "empty": {"M": {}}, "list": {"L": []}}},
        }
        for n in range(5):
            dynamodb.put_item(TableName="t", Item={"pk": {"S": "p"}, "sk": {"S": f"s{n}"}, **every_type})
        key = {"pk": {"S": "p"}, "sk": {"S": "s1"}}
        dynamodb.get_item(TableName="t", Key=key)
        dynamodb.batch_get_item(RequestItems={"t": {"Keys": [key, {"pk": {"S": "p"}, "sk": {"S": "s2"}}]}})
        dynamodb.query(TableName="t", KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "p"}}, Limit=2)
        dynamodb.scan(TableName="t", ReturnConsumedCapacity="TOTAL")
        dynamodb.put_item(TableName="t", Item={**key, "v": {"N": "1"}}, ReturnValues="ALL_OLD")
        dynamodb.update_item(TableName="t", Key=key, UpdateExpression="ADD v :one",
                             ExpressionAttributeValues={":one": {"N": "1"}}, ReturnValues="ALL_NEW")
        dynamodb.transact_write_items(TransactItems=[{"Put": {"TableName": "t", "Item": {"pk": {"S": "q"}, "sk": {"S": "1"}}}}])
        with self.assertRaises(ClientError):  # an error answer, serialised by moto
            dynamodb.transact_write_items(TransactItems=[{"Put": {
                "TableName": "t", "Item": {"pk": {"S": "q"}, "sk": {"S": "1"}}, "ConditionExpression": "attribute_not_exists(pk)",
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }}])
        dynamodb.describe_table(TableName="t")
        dynamodb.list_tables()
        self.assertLessEqual(
            {"GetItem", "BatchGetItem", "Query", "Scan", "PutItem", "UpdateItem", "TransactWriteItems", "DescribeTable"},
            self.compiled,
        )

    def test_kinesis_and_sqs_answers_match_moto(self):
        kinesis = self.client("kinesis")
        kinesis.create_stream(StreamName="s", ShardCount=2)
        kinesis.put_records(StreamName="s", Records=[{"Data": bytes([n]) * n, "PartitionKey": f"k{n}"} for n in range(20)])
        kinesis.put_record(StreamName="s", Data=b"one", PartitionKey="k")
        for shard in kinesis.list_shards(StreamName="s")["Shards"]:
            iterator = kinesis.get_shard_iterator(StreamName="s", ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")
            kinesis.get_records(ShardIterator=iterator["ShardIterator"], Limit=100)
        kinesis.describe_stream(StreamName="s")
        kinesis.describe_stream_summary(StreamName="s")
        sqs = self.client("sqs")
        queue = sqs.create_queue(QueueName="q")["QueueUrl"]
        sqs.send_message(QueueUrl=queue, MessageBody="hello", MessageAttributes={"a": {"DataType": "String", "StringValue": "v"}})
        sqs.receive_message(QueueUrl=queue, AttributeNames=["All"], MessageAttributeNames=["All"])
        sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])
        self.assertLessEqual({"PutRecords", "GetRecords", "ListShards", "DescribeStreamSummary", "ReceiveMessage"}, self.compiled)

    def test_aliases_nulls_and_objects_are_read_as_moto_reads_them(self):
        from moto.core.responses import ActionContext, ActionResult, get_service_model
        from moto.core.serialize import JSONSerializer

        class Shard:  # a model object, not a dict: moto's own path
            shard_id = "shardId-1"
            hash_key_range = {"StartingHashKey": "0", "EndingHashKey": "1"}

        service = get_service_model("kinesis")
        results = {
            "ListShards": [
                {"Shards": [{"shard_id": "shardId-0", "HashKeyRange": None, "unknown": 1}, None], "NextToken": None},
                {"Shards": [Shard()]},
                {"Shards": []},
                None,
            ],
            "GetRecords": [
                {"Records": [{"sequence_number": "1", "data": "text", "partition_key": "k",
                              "approximate_arrival_timestamp": 1764496800.125, "EncryptionType": "NONE"}],
                 "MillisBehindLatest": "5", "NextShardIterator": None},
            ],
        }
        for operation, values in results.items():
            context = ActionContext(service, service.operation_model(operation), JSONSerializer, object())
            for value in values:
                with self.subTest(operation=operation, value=value):
                    result = ActionResult(value)
                    self.assertEqual(
                        self.launcher._execute_result_compiled(result, context),
                        self.launcher._execute_result(result, context),
                    )


class FifoLockTest(unittest.TestCase):
    def test_waiters_get_the_lock_in_the_order_they_asked(self):
        sys.path.insert(0, str(LAUNCHER.parent))
        import moto_correctness

        lock = moto_correctness.FifoLock()
        order = []

        def take(name):
            with lock:
                order.append(name)

        threads = []
        with lock:
            for name in range(8):
                thread = threading.Thread(target=take, args=(name,))
                thread.start()
                threads.append(thread)
                deadline = time.monotonic() + 5
                while len(lock._waiting) < name + 1 and time.monotonic() < deadline:
                    time.sleep(0.001)
        for thread in threads:
            thread.join(timeout=5)
        self.assertEqual(order, list(range(8)))
        with lock:  # free again, and taken at once
            order.append("again")
        self.assertEqual(order[-1], "again")


if __name__ == "__main__":
    unittest.main()

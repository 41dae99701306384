#!/usr/bin/env python3
"""How fast the local stack goes, and how much of that the emulator allows.

1. Emulator ceiling: the launcher (moto_server.py) alone, driven with boto3 through the calls
   the pipeline makes for each batch of 100 events, one batch after another for
   `--raw-seconds`: ingest's PutRecords of 100 and its received-counter update; the
   transform's GetRecords, reference GetItem, TransactWriteItems of the events with their
   counters (grouped as the transform groups them: at most 100 actions), the users-sketch
   BatchGetItem and conditional UpdateItems, and the PutRecords of 100 to the output stream.
2. Whole stack: `eventline-local` (as `make run` starts it) under
   `eventline-gen load --rate R --duration N`, signed with testing/testing in us-east-1, with
   every accepted event read back by `eventline-gen` unless `--no-read-back`. Meanwhile the
   counters are read from the emulator each second, to time when every accepted event has
   been stored and counted and to see how far processing fell behind ingest while sending
   (the stack keeps up when that never passed KEEP_UP_LAG_SECONDS of sending); `GET /metrics`
   totals are checked at the end.

Prints both rates and their ratios; exits 1 if the stack lost or failed an event.
Run from the checkout: `make bench-local` (builds what it needs first).
"""

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

ROOT = Path(__file__).resolve().parents[3]
REGION = "us-east-1"
CREDENTIALS = Credentials("testing", "testing")
BATCH = 500
# The stack keeps up with the offered rate when the generator sent at (nearly) that rate,
# the events accepted but not yet stored never amounted to more than this many seconds of
# sending, and the last of them was stored within as long after sending ended.
KEEP_UP_SEND_SHARE = 0.98
KEEP_UP_LAG_SECONDS = 2
SHARD_ID = "shardId-000000000000"
SOURCES = ["msc-ber-01", "msc-fra-01", "smsc-muc-01", "pgw-ham-01", "sgsn-stu-01"]
TYPES = ["call_out", "call_in", "sms", "data_session"]


def free_port():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        return listener.getsockname()[1]


def wait_for_port(port, process, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing answered on port {port} within {seconds} s")


def stop(process, signal_number=signal.SIGTERM, seconds=90):
    """Stops a process this script started, by its PID."""
    if process.poll() is None:
        process.send_signal(signal_number)
        try:
            process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- 1. The emulator's ceiling ---------------------------------------------------------------


def window_buckets(events):
    """The second and minute window buckets the events fall in, as the transform names them."""
    seconds = {e["second"] for e in events}
    return sorted({f"S#{s:011d}" for s in seconds} | {f"M#{s // 60 * 60:011d}" for s in seconds})


class PipelineCalls:
    """The calls of one batch, with items shaped like the pipeline's."""

    def __init__(self, endpoint):
        config = Config(retries={"total_max_attempts": 1}, parameter_validation=False, read_timeout=60)

        def client(service):
            return boto3.client(
                service,
                endpoint_url=endpoint,
                region_name=REGION,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
                config=config,
            )

        self.dynamodb = client("dynamodb")
        self.kinesis = client("kinesis")
        self.table = "bench-events"
        self.ingest_stream = "bench-ingest"
        self.output_stream = "bench-output"
        self.dynamodb.create_table(
            TableName=self.table,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[
                {"AttributeName": name, "AttributeType": "S"} for name in ("pk", "sk", "user_pk", "user_sk")
            ],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": "ByUser",
                    "KeySchema": [
                        {"AttributeName": "user_pk", "KeyType": "HASH"},
                        {"AttributeName": "user_sk", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
        )
        for stream in (self.ingest_stream, self.output_stream):
            self.kinesis.create_stream(StreamName=stream, ShardCount=1)
        self.iterator = self.kinesis.get_shard_iterator(
            StreamName=self.ingest_stream, ShardId=SHARD_ID, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        self.random = random.Random(42)
        self.users = [f"49{self.random.randrange(10**10, 10**11)}" for _ in range(5000)]
        self.sketch_version = {}
        self.position = 0
        self.lease = uuid.uuid4().hex
        self.requests = 0

    def event(self):
        now = time.time()
        return {
            "id": str(uuid.UUID(int=self.random.getrandbits(128), version=4)),
            "source": self.random.choice(SOURCES),
            "type": self.random.choice(TYPES),
            "second": int(now) - self.random.randrange(3),
            "user": self.random.choice(self.users),
            "duration": self.random.randrange(600),
        }

    def batch(self):
        events = [self.event() for _ in range(BATCH)]
        self.ingest(events)
        self.transform(events)

    def ingest(self, events):
        records = [
            {
                "Data": json.dumps({**e, "payload": "x" * 300}).encode(),
                "PartitionKey": e["id"],
            }
            for e in events
        ]
        self.kinesis.put_records(StreamName=self.ingest_stream, Records=records)
        # The received count on the slot this environment leases (functions/ingest/src/counter.rs).
        self.requests += 1
        self.dynamodb.update_item(
            TableName=self.table,
            Key={"pk": {"S": "METRICS"}, "sk": {"S": "INGEST#L00"}},
            UpdateExpression="ADD #received :n SET #owner = :owner, #seq = :seq, #until = :until, "
            "#first = if_not_exists(#first, :now)",
            ConditionExpression="(#owner = :owner AND #seq < :seq) OR attribute_not_exists(#owner) OR #until < :now",
            ExpressionAttributeNames={
                "#received": "received",
                "#owner": "lease_owner",
                "#seq": "lease_seq",
                "#until": "lease_until_ms",
                "#first": "first_received_ms",
            },
            ExpressionAttributeValues={
                ":n": {"N": str(len(events))},
                ":owner": {"S": self.lease},
                ":seq": {"N": str(self.requests)},
                ":until": {"N": "300001"},
                ":now": {"N": "1"},
            },
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )

    def transform(self, events):
        page = self.kinesis.get_records(ShardIterator=self.iterator, Limit=BATCH)
        self.iterator = page["NextShardIterator"]
        self.dynamodb.get_item(TableName=self.table, Key={"pk": {"S": "REFERENCE"}, "sk": {"S": "CURRENT"}})
        for start in range(0, len(events), 98):
            self.dynamodb.transact_write_items(TransactItems=self.transaction(events[start : start + 98]))
        self.add_analytics(events)
        self.merge_users(events)
        records = [{"Data": json.dumps({**e, "processed": True}).encode(), "PartitionKey": e["id"]} for e in events]
        self.kinesis.put_records(StreamName=self.output_stream, Records=records)

    def transaction(self, events):
        """At most 98 events' puts, with the shard's totals and throughput second."""
        actions = [{"Put": self.event_item(e)} for e in events]
        totals = {"processed": len(events), "latency_sum_ms": 63 * len(events)}
        actions.append({"Update": self.adds("METRICS", "SHARD#" + SHARD_ID, totals, set_now=True)})
        rate_key = f"{int(time.time()):011d}#{SHARD_ID}"
        actions.append({"Update": self.adds("RATE", rate_key, {"processed": len(events)}, ttl=True)})
        return actions

    def add_analytics(self, events):
        """One conditional update per window bucket and aggregate item the batch adds to,
        marking the last record each took."""
        self.position += 1
        updates = []
        for bucket in window_buckets(events):
            counts = {"events": len(events), "unknown": len(events)}
            for e in events:
                for name in (f"t#{e['type']}", f"s#{e['source']}", "p#unknown", "r#unknown"):
                    counts[name] = counts.get(name, 0) + 1
            updates.append(self.adds(f"WINDOW#{SHARD_ID}", bucket, counts, ttl=True))
        counts = {"events": 1, "t#call_out": 1, "s#msc-ber-01": 1, "m#duration_seconds": 95}
        keys = {(f"USERAGG#{e['user']}", "D#2026-11-30") for e in events}
        keys |= {(f"AGG#{SHARD_ID}", "D#2026-11-30"), (f"AGG#{SHARD_ID}", "M#2026-11")}
        updates += [self.adds(pk, sk, counts) for pk, sk in sorted(keys)]
        for update in updates:
            update["UpdateExpression"] += (", " if " SET " in update["UpdateExpression"] else " SET ") + "#taken = :last"
            update["ExpressionAttributeNames"]["#taken"] = f"w#{SHARD_ID}"
            update["ExpressionAttributeValues"][":first"] = {"S": f"{self.position:020d}#0"}
            update["ExpressionAttributeValues"][":last"] = {"S": f"{self.position:020d}#9"}
            update["ConditionExpression"] = "attribute_not_exists(#taken) OR #taken < :first"
            self.dynamodb.update_item(**update)

    def event_item(self, e):
        text = {"S": json.dumps(e)}
        item = {
            "pk": {"S": f"EVENT#{e['source']}#{e['id']}"},
            "sk": {"S": "EVENT"},
            "user_pk": {"S": f"USER#{e['user']}"},
            "user_sk": {"S": f"{e['second']}#{e['source']}#{e['id']}"},
            "id": {"S": e["id"]},
            "source": {"S": e["source"]},
            "type": {"S": e["type"]},
            "user_id": {"S": e["user"]},
            "timestamp": {"S": str(e["second"])},
            "received_at": {"S": str(time.time())},
            "processed_at": {"S": str(time.time())},
            "latency_ms": {"N": "63"},
            "ingest_id": {"S": uuid.uuid4().hex},
            "shard_id": {"S": SHARD_ID},
            "sequence_number": {"S": "1"},
            "generation": {"N": "0"},
            "plan": {"S": "unknown"},
            "region": {"S": "unknown"},
            "payload": {"S": "HAMBURG/3854-35821"},
            "data": text,
        }
        return {
            "TableName": self.table,
            "Item": item,
            "ConditionExpression": "attribute_not_exists(pk)",
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }

    def adds(self, pk, sk, counts, set_now=False, ttl=False):
        names = {f"#a{i}": name for i, name in enumerate(counts)}
        values = {f":a{i}": {"N": str(count)} for i, count in enumerate(counts.values())}
        expression = "ADD " + ", ".join(f"#a{i} :a{i}" for i in range(len(counts)))
        sets = []
        if set_now:
            names.update({"#last": "last_active_ms", "#first": "first_processed_ms"})
            values[":now"] = {"N": str(int(time.time() * 1000))}
            sets += ["#last = :now", "#first = if_not_exists(#first, :now)"]
        if ttl:
            names["#ttl"] = "expires_at"
            values[":ttl"] = {"N": str(int(time.time()) + 7200)}
            sets.append("#ttl = :ttl")
        if sets:
            expression += " SET " + ", ".join(sets)
        return {
            "TableName": self.table,
            "Key": {"pk": {"S": pk}, "sk": {"S": sk}},
            "UpdateExpression": expression,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }

    def merge_users(self, events):
        buckets = window_buckets(events)
        keys = [{"pk": {"S": f"WINDOW#{SHARD_ID}"}, "sk": {"S": b + "#U"}} for b in buckets]
        self.dynamodb.batch_get_item(RequestItems={self.table: {"Keys": keys, "ConsistentRead": True}})
        for bucket in buckets:
            version = self.sketch_version.get(bucket, 0)
            request = {
                "TableName": self.table,
                "Key": {"pk": {"S": f"WINDOW#{SHARD_ID}"}, "sk": {"S": bucket + "#U"}},
                "UpdateExpression": "SET #sketch = :sketch, #version = :next, #ttl = if_not_exists(#ttl, :ttl)",
                "ExpressionAttributeNames": {
                    "#sketch": "users_sketch",
                    "#version": "sketch_version",
                    "#ttl": "expires_at",
                },
                "ExpressionAttributeValues": {
                    ":sketch": {"B": os.urandom(400)},
                    ":next": {"N": str(version + 1)},
                    ":ttl": {"N": str(int(time.time()) + 7200)},
                },
            }
            if version == 0:
                request["ConditionExpression"] = "attribute_not_exists(#version)"
            else:
                request["ConditionExpression"] = "#version = :version"
                request["ExpressionAttributeValues"][":version"] = {"N": str(version)}
            self.dynamodb.update_item(**request)
            self.sketch_version[bucket] = version + 1


def cpu_seconds(pid):
    """User and system CPU seconds the process has used (Linux's /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def emulator_ceiling(root, seconds, without=()):
    """Events/s the emulator alone takes with the pipeline's calls, batch after batch, and the
    launcher's CPU per batch; `without` names speed patches to leave out."""
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="bench-local-moto-", suffix=".log", delete=False)
    launcher = subprocess.Popen(
        [sys.executable, str(root / "tools/local/moto_server.py"), "-H", "127.0.0.1", "-p", str(port),
         "--exit-with-parent"],
        stdin=subprocess.PIPE,  # the launcher exits when this run ends, however it ends
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "EVENTLINE_MOTO_WITHOUT": ",".join(without)},
    )
    try:
        wait_for_port(port, launcher)
        calls = PipelineCalls(f"http://127.0.0.1:{port}")
        calls.batch()  # warm-up
        durations = []
        started, cpu_started = time.monotonic(), cpu_seconds(launcher.pid)
        while time.monotonic() - started < seconds:
            batch_started = time.monotonic()
            calls.batch()
            durations.append(time.monotonic() - batch_started)
        elapsed, cpu = time.monotonic() - started, cpu_seconds(launcher.pid) - cpu_started
    finally:
        stop(launcher)
        log.close()
        os.unlink(log.name)
    return {
        "batches": len(durations),
        "events_per_second": len(durations) * BATCH / elapsed,
        "batch_ms_median": 1000 * statistics.median(durations),
        "batch_ms_first_tenth": 1000 * statistics.median(durations[: max(1, len(durations) // 10)]),
        "batch_ms_last_tenth": 1000 * statistics.median(durations[-max(1, len(durations) // 10) :]),
        "emulator_cpu_ms_per_batch": 1000 * cpu / len(durations),
    }


def speed_patches(args):
    """What each speed patch of the launcher buys: the emulator ceiling with every patch and
    without the one, run after run, `--rounds` times. Prints a Markdown table."""
    sys.path.insert(0, str(args.root / "tools/local"))
    import moto_server  # noqa: E402 (the launcher's own list of patch names)

    names = args.speed_patches.split(",") if args.speed_patches != "all" else list(moto_server.SPEED_PATCHES)
    unknown = sorted(set(names) - set(moto_server.SPEED_PATCHES))
    if unknown:
        sys.exit(f"unknown speed patches: {', '.join(unknown)}")
    runs = {name: [] for name in names}
    for round_number in range(args.rounds):
        for name in names:
            # Which of the pair runs first alternates, so that drift in the machine cancels out.
            if round_number % 2 == 0:
                with_all = emulator_ceiling(args.root, args.raw_seconds)
                without = emulator_ceiling(args.root, args.raw_seconds, without=[name])
            else:
                without = emulator_ceiling(args.root, args.raw_seconds, without=[name])
                with_all = emulator_ceiling(args.root, args.raw_seconds)
            runs[name].append((with_all, without))
            print(
                f"round {round_number + 1}/{args.rounds} {name}: {with_all['events_per_second']:.0f} events/s with, "
                f"{without['events_per_second']:.0f} without",
                file=sys.stderr,
            )
    print(f"| patch | events/s with all | without it | throughput it buys | emulator CPU per batch with / without |")
    print("|---|---:|---:|---:|---:|")
    for name, pairs in runs.items():
        with_rate = statistics.median(w["events_per_second"] for w, _ in pairs)
        without_rate = statistics.median(o["events_per_second"] for _, o in pairs)
        buys = statistics.median(w["events_per_second"] / o["events_per_second"] - 1 for w, o in pairs)
        with_cpu = statistics.median(w["emulator_cpu_ms_per_batch"] for w, _ in pairs)
        without_cpu = statistics.median(o["emulator_cpu_ms_per_batch"] for _, o in pairs)
        print(f"| `{name}` | {with_rate:.0f} | {without_rate:.0f} | {buys:+.0%} | {with_cpu:.0f} / {without_cpu:.0f} ms |")


# --- 2. The whole stack ----------------------------------------------------------------------


def signed_get(url):
    request = AWSRequest(method="GET", url=url)
    SigV4Auth(CREDENTIALS, "execute-api", REGION).add_auth(request)
    prepared = urllib.request.Request(url, headers=dict(request.headers.items()))
    with urllib.request.urlopen(prepared, timeout=30) as answer:
        return json.loads(answer.read())


def retried(read, attempts=5):
    for attempt in range(attempts):
        try:
            return read()
        except Exception:
            if attempt == attempts - 1:
                raise
            time.sleep(2)


def last_metrics(url):
    """GET /metrics, tried a few times (a read can time out while the emulator is busy), or
    None if it never answered."""
    for _ in range(5):
        try:
            return signed_get(f"{url}/metrics")
        except OSError:
            time.sleep(2)
    return None


def pipeline_counters(stack_log):
    """Reads the events ingest counted as received and the shards' processed, failed and
    duplicate counts from the emulator the stack started (its endpoint and table are in the
    stack's start-up lines)."""
    endpoint = table = None
    deadline = time.monotonic() + 60
    while (endpoint is None or table is None) and time.monotonic() < deadline:
        for line in stack_log.read_text().splitlines():
            words = line.split()
            if words[:1] == ["emulator"] and len(words) > 1:
                endpoint = words[1]
            elif words[:1] == ["table"] and len(words) > 1:
                table = words[1]
        time.sleep(0.2)
    if endpoint is None or table is None:
        raise RuntimeError(f"the stack did not name its emulator and table; see {stack_log}")
    dynamodb = boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}, read_timeout=10),
    )

    def counts():
        # One partition: the shards' totals (SHARD#...) and ingest's received-counter slots
        # (INGEST#...).
        items = dynamodb.query(
            TableName=table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": "METRICS"}},
            ConsistentRead=True,
        )["Items"]
        total = {"received": 0, "processed": 0, "failed": 0, "duplicate": 0}
        for item in items:
            sort_key = item["sk"]["S"]
            if sort_key.startswith("SHARD#"):
                names = ("processed", "failed", "duplicate")
            elif sort_key.startswith("INGEST#"):
                names = ("received",)
            else:
                names = ()
            for name in names:
                total[name] += int(item.get(name, {"N": "0"})["N"])
        return total

    return counts


def whole_stack(args):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    stack_log = tempfile.NamedTemporaryFile(prefix="bench-local-stack-", suffix=".log", delete=False)
    stack = subprocess.Popen(
        [str(args.stack), "--addr", f"127.0.0.1:{port}", "--root", str(args.root)],
        stdin=subprocess.DEVNULL,
        stdout=stack_log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": REGION,
        "NO_PROXY": "127.0.0.1,localhost",
    }
    env.pop("AWS_SESSION_TOKEN", None)
    samples = []
    polling = threading.Event()

    def poll_counters(counters):
        # The shard counters straight from the table, once a second: GET /metrics reads far
        # more than these, and reading it often would slow the very pipeline being timed.
        while not polling.is_set():
            try:
                samples.append((time.monotonic(), counters()))
            except Exception:  # the emulator busy past the client's timeout: try again
                pass
            polling.wait(1.0)

    try:
        wait_for_port(port, stack, seconds=120)
        counters = pipeline_counters(Path(stack_log.name))
        command = [
            str(args.generator), "load", "--url", url, "--rate", str(args.rate), "--duration", f"{args.seconds}s",
            "--seed", "42", "--sign", "--quiet", "--json",
        ]
        if args.read_back:
            command += ["--verify-concurrency", "16", "--verify-timeout", f"{args.drain_seconds}s"]
        else:
            command += ["--no-verify"]
        poller = threading.Thread(target=poll_counters, args=(counters,), daemon=True)
        started = time.monotonic()
        poller.start()
        load = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
        if load.returncode not in (0, 1) or not load.stdout.strip():
            raise RuntimeError(f"eventline-gen load failed ({load.returncode}): {load.stderr.strip()}")
        summary = json.loads(load.stdout)
        accepted = summary["accepted"]

        def settled(counts):
            return counts["processed"] + counts["failed"] + counts["duplicate"] >= accepted

        deadline = time.monotonic() + args.drain_seconds
        while not (samples and settled(samples[-1][1])) and time.monotonic() < deadline:
            time.sleep(0.5)
        polling.set()
        poller.join()
        final = retried(counters)
        metrics = last_metrics(url)
    finally:
        polling.set()
        stop(stack, signal.SIGINT)
        stack_log.close()
    done_at = next((t for t, m in samples if settled(m)), None)
    send_seconds = summary["send_seconds"]
    at_send_end = [m for t, m in samples if t <= started + send_seconds]
    # Events accepted but not yet stored and counted, as each sample found them.
    behind = [m["received"] - m["processed"] - m["failed"] - m["duplicate"] for m in at_send_end]
    drained_after = None if done_at is None else max(0.0, done_at - started - send_seconds)
    kept_up = (
        done_at is not None
        and summary["events_per_second"] >= KEEP_UP_SEND_SHARE * args.rate
        and max(behind, default=0) <= KEEP_UP_LAG_SECONDS * args.rate
        and drained_after <= KEEP_UP_LAG_SECONDS
    )
    result = {
        "target_rate": args.rate,
        "seconds": args.seconds,
        "sent": summary["sent"],
        "accepted": accepted,
        "failed_to_send": summary["failed"],
        "send_rate": summary["events_per_second"],
        "request_latency_ms": summary["latency_ms"],
        "processed": final["processed"],
        "events_failed": final["failed"],
        "events_duplicate": final["duplicate"],
        "metrics": metrics,
        "processed_when_sending_ended": at_send_end[-1]["processed"] if at_send_end else None,
        "most_behind_while_sending": max(behind, default=None),
        "behind_when_sending_ended": behind[-1] if behind else None,
        "drained_after_sending_s": drained_after,
        "kept_up": kept_up,
        "all_processed_after_s": None if done_at is None else done_at - started,
        "events_per_second": None if done_at is None else final["processed"] / (done_at - started),
        "read_back": {"verified": summary["verified"], "not_found": summary["unverified"]} if args.read_back else None,
        "log": stack_log.name,
    }
    ok = (
        done_at is not None
        and summary["failed"] == 0
        and final["processed"] == accepted == summary["sent"]
        and final["failed"] == 0
        and final["duplicate"] == 0
        and (metrics is None or metrics["events_processed"] == accepted)
        and (not args.read_back or summary["unverified"] == 0)
    )
    if ok:
        os.unlink(stack_log.name)
        result["log"] = None
    return result, ok


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60, help="how long eventline-gen sends (default 60)")
    parser.add_argument("--rate", type=int, default=1000, help="events/s eventline-gen sends (default 1000)")
    parser.add_argument("--raw-seconds", type=int, default=20, help="how long to drive the emulator alone (default 20)")
    parser.add_argument("--drain-seconds", type=int, default=300, help="longest wait for processing after sending")
    parser.add_argument("--no-read-back", dest="read_back", action="store_false", help="skip reading every event back")
    parser.add_argument("--skip-raw", action="store_true", help="skip the emulator ceiling")
    parser.add_argument("--skip-stack", action="store_true", help="skip the whole-stack run")
    parser.add_argument("--speed-patches", metavar="NAMES",
                        help="instead: what each named speed patch of the launcher buys (comma-separated, or all)")
    parser.add_argument("--rounds", type=int, default=3, help="with --speed-patches: runs of each pair (default 3)")
    parser.add_argument("--root", type=Path, default=ROOT, help="checkout with template.yaml, .venv and the launcher")
    parser.add_argument("--stack", type=Path, default=ROOT / "target/local/eventline-local")
    parser.add_argument("--generator", type=Path, default=ROOT / "target/release/eventline-gen")
    args = parser.parse_args()
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    if args.speed_patches:
        speed_patches(args)
        return

    report = {}
    if not args.skip_raw:
        print(f"emulator ceiling: the pipeline's calls per batch of {BATCH}, {args.raw_seconds} s ...", file=sys.stderr)
        report["emulator"] = emulator_ceiling(args.root, args.raw_seconds)
        raw = report["emulator"]
        print(
            f"emulator    {raw['events_per_second']:.0f} events/s ({raw['batches']} batches of {BATCH}; "
            f"median {raw['batch_ms_median']:.1f} ms a batch, {raw['batch_ms_first_tenth']:.1f} ms in the first "
            f"tenth, {raw['batch_ms_last_tenth']:.1f} ms in the last)"
        )
    ok = True
    if not args.skip_stack:
        print(f"whole stack: eventline-gen load at {args.rate} events/s for {args.seconds} s ...", file=sys.stderr)
        report["stack"], ok = whole_stack(args)
        stack = report["stack"]
        rate = stack["events_per_second"]
        print(
            f"stack       sent {stack['sent']} at {stack['send_rate']:.0f} events/s; "
            f"{stack['processed']} stored and counted ({stack['events_failed']} failed, "
            f"{stack['events_duplicate']} duplicate); {stack['processed_when_sending_ended']} processed when "
            f"sending ended; all processed after "
            + ("never" if rate is None else f"{stack['all_processed_after_s']:.1f} s: {rate:.0f} events/s")
        )
        if stack["most_behind_while_sending"] is not None:
            m = stack["metrics"] or {}
            print(
                f"keeping up  at most {stack['most_behind_while_sending']} events accepted and not yet stored "
                f"while sending, {stack['behind_when_sending_ended']} when it ended; drained "
                + ("never" if stack["drained_after_sending_s"] is None
                   else f"{stack['drained_after_sending_s']:.1f} s after")
                + (f"; p99 processing latency {m['p99_processing_latency_ms']} ms" if m else "")
                + (": kept up" if stack["kept_up"] else f": fell behind (limit {KEEP_UP_LAG_SECONDS} s of sending)")
            )
        if stack["metrics"] is None:
            print("metrics     GET /metrics did not answer; the counts above are the table's own")
        else:
            m = stack["metrics"]
            print(f"metrics     received {m['events_received']}, processed {m['events_processed']}, "
                  f"failed {m['events_failed']}, duplicate {m['events_duplicate']}")
        if stack["read_back"]:
            print(f"read back   {stack['read_back']['verified']} found, {stack['read_back']['not_found']} not found")
        if rate is not None:
            print(f"ratio       {rate / args.rate:.2f} of the target rate", end="")
            if "emulator" in report:
                print(f", {rate / report['emulator']['events_per_second']:.2f} of the emulator ceiling", end="")
                if stack["kept_up"]:
                    # Capped by what was offered: only a rate the stack cannot keep up with
                    # measures what it can take.
                    print(" (it took all it was offered; a --rate above the ceiling measures its own)", end="")
            print()
        if not ok:
            print(f"FAILED: not every event was stored and counted; stack log: {stack['log']}")
    print(json.dumps(report), file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

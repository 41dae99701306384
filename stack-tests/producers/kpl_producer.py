"""A producer that writes KPL aggregated records straight to the ingest stream, with the
aws_kinesis_agg library and boto3: the producer stack-tests/tests/kpl.rs drives.

Reads a JSON plan on standard input: a list of puts, each
{"records": [{"partition_key": ..., "data": "<text>", "explicit_hash_key": ...?}],
 "times": N, "break_digest": false}.
Each put aggregates its records into one aggregated record, as the KPL would, and puts those
bytes N times (a producer retrying its put). With break_digest, the digest's last byte is
changed first. Prints, per put, the shard, the sequence number of each time it was put, and
the bytes put (base64).

Usage: kpl_producer.py --endpoint-url URL --stream NAME (credentials and region from the
environment, as boto3 reads them).
"""

import argparse
import base64
import json
import sys

import boto3
from aws_kinesis_agg.aggregator import RecordAggregator


def aggregate(records):
    """The aggregated record of these user records: (partition key, explicit hash key, bytes)."""
    aggregator = RecordAggregator()
    for record in records:
        full = aggregator.add_user_record(
            record["partition_key"], record["data"].encode(), record.get("explicit_hash_key")
        )
        if full is not None:
            raise SystemExit("the records do not fit one aggregated record")
    return aggregator.clear_and_get().get_contents()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint-url", required=True)
    parser.add_argument("--stream", required=True)
    args = parser.parse_args()
    kinesis = boto3.client("kinesis", endpoint_url=args.endpoint_url)

    results = []
    for put in json.load(sys.stdin):
        partition_key, explicit_hash_key, data = aggregate(put["records"])
        if put.get("break_digest"):
            data = data[:-1] + bytes([data[-1] ^ 0x01])
        request = {"StreamName": args.stream, "PartitionKey": partition_key, "Data": data}
        if explicit_hash_key:
            request["ExplicitHashKey"] = explicit_hash_key
        answers = [kinesis.put_record(**request) for _ in range(put.get("times", 1))]
        results.append(
            {
                "shard_id": answers[0]["ShardId"],
                "sequence_numbers": [answer["SequenceNumber"] for answer in answers],
                "data_base64": base64.b64encode(data).decode(),
            }
        )
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Run moto's server for the local stack. Arguments are moto_server's, and
`--exit-with-parent`: exit when standard input closes (see `exit_when_stdin_closes`).

What the local stack needs of moto for its answers to be right (one request at a time, item
backups for transactions, event source mappings left to the local poller, the fault layer,
DynamoDB's rules) is in moto_correctness.py, installed here after the speed patches below.

Speed patches. moto runs its full expression machinery on every counter update and parses
every condition again, sorts every item of a table to answer a query on one partition, walks
or copies a whole Kinesis shard on every put and read, walks the botocore model for every
member of a JSON answer, and lets Python's full garbage collection scan all it stores again
and again. Each patch below says what it fixes; each leaves moto's answers as they were
(tests in test_moto_server.py compare them with moto's own code) and checks at start, by a
digest of the source it replaces or mirrors, that the installed moto is the one it was
written against. A speed patch stays only while it alone buys at least a tenth of the local
stack's throughput: tools/local/README.md lists what each buys, and how it is measured.

`EVENTLINE_MOTO_WITHOUT=name,name` leaves the named speed patches out, to measure what each
buys (an unknown name stops the launcher); the correctness patches are always installed.
"""

import enum
import functools
import gc
import inspect
import json
import os
import re
import sys
import threading
from pathlib import Path

import moto.server
from moto import settings as moto_settings
from moto.core import responses as core_responses
from moto.core import serialize as core_serialize
from moto.core import utils as core_utils
from moto.dynamodb import comparisons, models
from moto.dynamodb.models import table as table_models
from moto.dynamodb.exceptions import ConditionalCheckFailed
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.parsing.executors import AddExecutor, SetExecutor
from moto.dynamodb.parsing.expressions import UpdateExpressionParser
from moto.dynamodb.parsing.validators import UpdateExpressionFunctionEvaluator, UpdateExpressionValidator
from moto.kinesis import models as kinesis_models

import moto_correctness
from moto_correctness import expect_source

WITHOUT = "EVENTLINE_MOTO_WITHOUT"
SPEED_PATCHES = {}  # name: installer, in the order they are installed
INSTALLED = []  # the names of the speed patches installed in this process


def speed_patch(name):
    """Registers the decorated function as the installer of the speed patch `name`."""

    def register(install_patch):
        SPEED_PATCHES[name] = install_patch
        return install_patch

    return register


# --- DynamoDB updates: counters without the expression machinery -------------------------
#
# Each transform commit holds dozens of counter updates (`ADD #a :a, ... SET #t = :t`). moto
# parses every update expression twice (request check and update), then copies the parsed
# tree and walks it with ten validators, twice for an item it creates, and checks the item
# size by re-measuring every attribute for each one it sets: about 3 ms per update here.

_parse_update_expression = UpdateExpressionParser.make


def _parsed_update_expression(expression):
    # Fixes parsing the same expression text on every call. Safe to share: moto's callers only
    # read the tree (`find_clauses`) or hand it to a validator, which works on a deep copy.
    if isinstance(expression, str):
        return _parsed_update_expression_text(expression)
    return _parse_update_expression(expression)


@functools.lru_cache(maxsize=4096)
def _parsed_update_expression_text(expression):
    return _parse_update_expression(expression)


_PLACEHOLDER = r"[A-Za-z0-9_]+"
_ADD_TERM = re.compile(rf" *#({_PLACEHOLDER}) +:({_PLACEHOLDER}) *")
_SET_TERM = re.compile(
    rf" *#({_PLACEHOLDER}) *= *(?::({_PLACEHOLDER})|if_not_exists\( *#({_PLACEHOLDER}) *, *:({_PLACEHOLDER}) *\)) *"
)
_CLAUSES = (
    re.compile(r" *ADD +(?P<add>[^=()]+?) +SET +(?P<set>.+?) *"),
    re.compile(r" *ADD +(?P<add>[^=()]+?) *"),
    re.compile(r" *SET +(?P<set>.+?) *"),
)
_NUMBER = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")


def _terms(term, text):
    """The matches of `term` in comma-separated `text`, a None where one does not match."""
    position = 0
    while position < len(text):
        found = term.match(text, position)
        if found is None or found.end() < len(text) and text[found.end()] != ",":
            yield None
            return
        yield found
        position = found.end() + 1
        if position == len(text):
            yield None  # a trailing comma
            return


@functools.lru_cache(maxsize=4096)
def _counter_actions(expression):
    """The actions of `ADD #a :a, ... SET #b = :b, #c = if_not_exists(#c, :c), ...` (each
    clause optional, in that order) as (kind, name placeholder, value placeholder), or None for
    any other expression."""
    match = next(filter(None, (clauses.fullmatch(expression) for clauses in _CLAUSES)), None)
    if match is None:
        return None
    groups = match.groupdict()
    actions = []
    for add in _terms(_ADD_TERM, groups.get("add") or ""):
        if add is None:
            return None
        actions.append(("ADD", "#" + add[1], ":" + add[2]))
    for assign in _terms(_SET_TERM, groups.get("set") or ""):
        if assign is None:
            return None
        if assign[2] is not None:
            actions.append(("SET", "#" + assign[1], ":" + assign[2]))
        elif assign[3] == assign[1]:
            actions.append(("IF_NOT_EXISTS", "#" + assign[1], ":" + assign[4]))
        else:
            return None
    return tuple(actions)


def _counter_update_plan(table, update_expression, names, values):
    """(attribute name, kind, value) per action when moto's validators would let the update
    through, else None. Whether each ADD meets a number is for the caller to check in the item."""
    if not isinstance(update_expression, str):
        return None
    actions = _counter_actions(update_expression)
    if actions is None or not names or not values:
        return None
    protected = set(table.table_key_attrs) | set(table.attribute_keys) | {a["AttributeName"] for a in table.attr}
    plan = []
    for kind, name_placeholder, value_placeholder in actions:
        name = names.get(name_placeholder)
        value = values.get(value_placeholder)
        if not isinstance(name, str) or not name or name in protected or name_placeholder in protected:
            return None
        # A string only set (the transform marks the last record an item took), else numbers
        # only, written plainly: moto's own arithmetic then never fails on them.
        if kind == "SET" and isinstance(value, dict) and list(value) == ["S"] and isinstance(value["S"], str):
            plan.append((name, kind, value))
            continue
        if not isinstance(value, dict) or list(value) != ["N"] or not isinstance(value["N"], str):
            return None
        if not _NUMBER.match(value["N"]):
            return None
        plan.append((name, kind, value))
    if len({name for name, _, _ in plan}) != len(plan):
        return None  # an attribute twice: moto's overlapping-paths error
    return plan


def _apply_counter_update(item, plan):
    """moto's executors for these actions, in order: the same result. The item's size is
    checked by the DynamoDB rules (dynamodb_rules.py) once the update is applied."""
    attrs = item.attrs
    for name, kind, value in plan:
        existing = attrs.get(name)
        if kind == "ADD":
            new = (existing if existing is not None else DynamoType({"N": "0"})) + DynamoType(value)
        elif kind == "IF_NOT_EXISTS" and existing is not None:
            new = existing
        else:
            new = DynamoType(value)
        dict.__setitem__(attrs, name, new)


_update_item = models.DynamoDBBackend.update_item
_update_item_signature = inspect.signature(_update_item)


def _update_item_with_counter_path(self, *args, **kwargs):
    """moto's update_item, with counter updates (see `_counter_actions`) applied directly. A
    condition (the transform guards its shared counters with one) is parsed and evaluated by
    moto's own condition parser, as moto's update_item does, before anything is written.
    Anything else is moto's update_item, called as it was called."""
    call = _update_item_signature.bind(self, *args, **kwargs)
    call.apply_defaults()
    arguments = call.arguments
    table_name, key = arguments["table_name"], arguments["key"]
    update_expression, condition_expression = arguments["update_expression"], arguments["condition_expression"]
    names, values = arguments["expression_attribute_names"], arguments["expression_attribute_values"]
    table = self.tables.get(table_name)
    plan = None
    if table is not None and table.stream_shard is None and not arguments["attribute_updates"] and not arguments["expected"]:
        if update_expression and (condition_expression is None or isinstance(condition_expression, str)):
            plan = _counter_update_plan(table, update_expression, names, values)
    if plan is not None:
        # As moto: the expression must parse (a syntax error is moto's to report) before the key is read.
        UpdateExpressionParser.make(update_expression)
        hash_value, range_value = _key_values(table, key)
        item = table.get_item(hash_value, range_value)
        # ADD needs a number where the attribute exists; anything else is moto's to report.
        if item is not None and any(
            kind == "ADD" and name in item.attrs and item.attrs[name].type != "N" for name, kind, _ in plan
        ):
            plan = None
    if plan is None:
        return _update_item(self, *args, **kwargs)
    if condition_expression is not None:
        condition = models.create_condition_expression_parser(condition_expression, names, values).parse()
        if not condition.expr(item):
            if arguments["return_values_on_condition_check_failure"] == "ALL_OLD" and item is not None:
                raise ConditionalCheckFailed(item=item.to_json()["Attributes"])
            raise ConditionalCheckFailed
    if item is None:
        data = {table.hash_key_attr: {hash_value.type: hash_value.value}}
        if range_value:
            data[table.range_key_attr] = {range_value.type: range_value.value}
        table.put_item(data)
        item = table.get_item(hash_value, range_value)
    _apply_counter_update(item, plan)
    return item


# Read by what wraps it (dynamodb_rules.py) as moto's own update_item.
_update_item_with_counter_path.__signature__ = _update_item_signature


def _key_values(table, key):
    # As moto's update_item reads the key.
    if table.hash_key_attr in key and table.range_key_attr in key:
        return DynamoType(key[table.hash_key_attr]), DynamoType(key[table.range_key_attr])
    if table.hash_key_attr in key:
        return DynamoType(key[table.hash_key_attr]), None
    return DynamoType(key), None


@speed_patch("update-parse-cache")
def _install_update_parse_cache():
    expect_source(_parse_update_expression, "2c00ed96d6e191f2")
    UpdateExpressionParser.make = staticmethod(_parsed_update_expression)


@speed_patch("counter-updates")
def _install_counter_updates():
    # What the counter path mirrors: the update itself, its validators, ADD and SET.
    expect_source(_update_item, "218984588dd689a5")
    expect_source(UpdateExpressionValidator.get_ast_processors, "918400bbecd67e83")
    expect_source(UpdateExpressionFunctionEvaluator, "dfee5d859b7d6a32")
    expect_source(AddExecutor.execute, "dadbc08d83f73bdb")
    expect_source(SetExecutor.set, "a8b5f69f92794b46")
    expect_source(DynamoType.__add__, "c2852d8ddde02bb3")
    models.DynamoDBBackend.update_item = _update_item_with_counter_path

# --- DynamoDB conditions: parsed once -----------------------------------------------------

_get_filter_expression = comparisons.get_filter_expression


@functools.lru_cache(maxsize=1024)
def _condition_without_placeholders(expression):
    return _get_filter_expression(expression, None, None)


def _get_filter_expression_cached(expression, names, values):
    # Fixes parsing `attribute_not_exists(pk)` again for every conditional put. Only
    # conditions without names or values are kept: their parse depends on the text alone, and
    # the parsed condition is only evaluated, never changed.
    if not names and not values and (expression is None or isinstance(expression, str)):
        return _condition_without_placeholders(expression)
    return _get_filter_expression(expression, names, values)


@speed_patch("condition-cache")
def _install_condition_cache():
    expect_source(_get_filter_expression, "0bb9e2d345c7f17f")
    models.get_filter_expression = _get_filter_expression_cached
    table_models.get_filter_expression = _get_filter_expression_cached

# --- DynamoDB queries: read the one partition asked for ---------------------------------
#
# A query on the table's own key (no index) takes the items of its partition key from all of
# `Table.all_items()`, which sorts every item of the table with DynamoType comparisons, so
# every `GET /metrics` and every read of the shards' counters costs more as events are stored.
# The table keeps its items by partition key already; this query reads that one partition.
# Index queries are left as they are.

_query = table_models.Table.query
_all_items = table_models.Table.all_items
_query_signature = inspect.signature(_query)
_query_partition = threading.local()


def _query_one_partition(self, *args, **kwargs):
    bound = _query_signature.bind(self, *args, **kwargs)
    hash_key = bound.arguments.get("hash_key")
    if bound.arguments.get("index_name") or hash_key is None:
        return _query(self, *args, **kwargs)
    _query_partition.hash_key = hash_key
    try:
        return _query(self, *args, **kwargs)
    finally:
        _query_partition.hash_key = None


def _all_items_of_the_queried_partition(self):
    hash_key = getattr(_query_partition, "hash_key", None)
    if hash_key is None:
        return _all_items(self)
    entry = self.items.get(hash_key)  # `get`: the table's defaultdict must not grow
    if entry is None:
        return []
    if not self.range_key_attr:
        return [entry]
    return list(entry.values())  # the query sorts them by sort key itself


@speed_patch("query-partition")
def _install_query_partition():
    expect_source(_query, "002b4d00be6df07c")
    expect_source(_all_items, "c80d2ee3c896acd0")
    table_models.Table.query = _query_one_partition
    table_models.Table.all_items = _all_items_of_the_queried_partition

# --- JSON answers: serialised by functions compiled once per operation ---------------------
#
# moto serialises a JSON-protocol answer by walking the operation's output shape and, for
# every member of every structure, asking an attribute picker which of several aliases the
# result carries, building the picker's context and alias providers each time. A DynamoDB
# attribute value is a structure of ten members, so an item of twenty attributes cost two
# hundred picks; a BatchGetItem of reference buckets took 7 ms to serialise. Results of the
# JSON services are plain dicts, lists and scalars, and for a dict the aliases depend only on
# the shape (moto's alias providers read the object's class and `Meta`, which a dict does not
# have): each operation's walk is compiled once, the aliases computed by moto's own picker,
# into functions that write the same JSON. Anything else (an error, a model object instead
# of a dict, a document type, response transformers, event streams) takes moto's path.

_execute_result = core_responses.ActionResult.execute_result
_compiled_json_answers = {}
_SKIP = object()  # nothing is written under the member's name


class _NotCompiled(Exception):
    """A shape or a value the compiled serialisers leave to moto."""


_JSON_TYPE_SERIALISERS = {
    "structure": core_serialize.BaseJSONSerializer._serialize_type_structure,
    "list": core_serialize.BaseJSONSerializer._serialize_type_list,
    "map": core_serialize.BaseJSONSerializer._serialize_type_map,
    "string": core_serialize.BaseJSONSerializer._serialize_type_string,
    "blob": core_serialize.ResponseSerializer._serialize_type_blob,
    "timestamp": core_serialize.ResponseSerializer._serialize_type_timestamp,
    "integer": core_serialize.ResponseSerializer._serialize_type_integer,
    "long": core_serialize.ResponseSerializer._serialize_type_integer,
    "float": core_serialize.ResponseSerializer._serialize_type_float,
    "double": core_serialize.ResponseSerializer._serialize_type_float,
}


def _json_serialiser(serializer, shape, compiled):
    """A function giving what `serializer._serialize` writes for a value of `shape` (or _SKIP
    for nothing); raises _NotCompiled for a shape it does not mirror."""
    kind = shape.type_name
    method = getattr(type(serializer), f"_serialize_type_{kind}", None)
    if method is None:
        if kind not in ("boolean", "char"):
            raise _NotCompiled(kind)
        return lambda value: value  # moto's `_default_serialize`
    if _JSON_TYPE_SERIALISERS.get(kind) is not method:
        raise _NotCompiled(kind)
    if kind in ("structure", "list", "map"):
        key = (kind, shape.name)
        if key not in compiled:
            compiled[key] = None
            compiled[key] = _json_container_serialiser(serializer, shape, compiled)
        convert = compiled[key]
        return convert if convert is not None else (lambda value, key=key: compiled[key](value))
    if kind == "string":
        return _json_string
    if kind == "blob":
        return serializer._base64
    if kind == "timestamp":
        timestamps = serializer._timestamp_serializer

        def timestamp(value):
            wrapper = {}
            timestamps.serialize(wrapper, value, shape, "timestamp")
            return wrapper["timestamp"]

        return timestamp
    return int if kind in ("integer", "long") else float


def _json_string(value):
    if type(value) is str:
        return value
    if isinstance(value, enum.Enum):
        value = value.value
    return str(value) if value not in [None, {}, []] else value


def _json_container_serialiser(serializer, shape, compiled):
    kind = shape.type_name
    if kind == "list":
        member = shape.member
        item_key = member.name
        convert = _json_serialiser(serializer, member, compiled)
        if member.serialization.get("name", item_key) != item_key:
            return lambda value: list(value)  # moto finds nothing under the item's key: the items as they are

        def listing(value):
            items = []
            for item in value:
                serialised = convert(item)
                items.append(item if serialised is _SKIP else serialised)
            return items

        return listing
    if kind == "map":
        value_shape = shape.value
        convert = _json_serialiser(serializer, value_shape, compiled)
        fixed_name = value_shape.serialization.get("name")
        is_structure = value_shape.type_name == "structure"

        def mapping(value):
            serialised = {}
            for key, item in value.items():
                if is_structure and not key:
                    raise _NotCompiled("a structure under an empty key")  # moto merges it into the map
                item = convert(item)
                if item is not _SKIP:
                    serialised[key if fixed_name is None else fixed_name] = item
            return serialised

        return mapping
    if shape.is_document_type:
        raise _NotCompiled("document type")
    return _json_structure_serialiser(serializer, shape, compiled)


def _json_structure_serialiser(serializer, shape, compiled):
    picker = core_serialize.XFormedAttributePicker()
    operation_model = serializer.operation_model
    members = []
    by_candidate = {}
    for index, (name, member) in enumerate(shape.members.items()):
        member.parent = shape  # as moto's walk sets it, which two alias providers read
        context = core_serialize.AttributePickerContext(
            obj={}, key=name, shape=member, operation_model=operation_model,
            service_model=operation_model.service_model,
        )
        candidates = tuple(dict.fromkeys(picker.get_possible_keys(context)))
        if any(not isinstance(candidate, str) or "." in candidate for candidate in candidates):
            raise _NotCompiled("a dotted alias")
        members.append((candidates, member.serialization.get("name", name), _json_serialiser(serializer, member, compiled)))
        for candidate in candidates:
            by_candidate.setdefault(candidate, []).append(index)

    def structure(value):
        if value is None:
            return _SKIP
        if type(value) is not dict:
            raise _NotCompiled(type(value).__name__)
        indices = set()
        for key in value:
            found = by_candidate.get(key)
            if found is not None:
                indices.update(found)
        serialised = {}
        for index in sorted(indices):
            candidates, json_name, convert = members[index]
            for candidate in candidates:
                member_value = value.get(candidate, _SKIP)
                if member_value is not _SKIP:
                    break
            if member_value is None:
                continue
            member_value = convert(member_value)
            if member_value is not _SKIP:
                serialised[json_name] = member_value
        return serialised

    return structure


def _compiled_answer(context):
    operation_model = context.operation_model
    key = (context.service_model.service_name, operation_model.name, context.serializer_class)
    if key not in _compiled_json_answers:
        serializer = context.serializer_class(operation_model=operation_model, value_picker=core_serialize.XFormedAttributePicker())
        try:
            shape = operation_model.output_shape
            body = None if shape is None else _json_serialiser(serializer, shape, {})
            content_type = serializer._get_protocol_specific_content_type()
            status = operation_model.http.get("responseCode", serializer.DEFAULT_RESPONSE_CODE)
            _compiled_json_answers[key] = (body, content_type, status)
        except _NotCompiled:
            _compiled_json_answers[key] = None
    return _compiled_json_answers[key]


def _execute_result_compiled(self, context):
    result = self.result
    if (
        context.serializer_class is not core_serialize.JSONSerializer
        or getattr(context.response, "RESPONSE_KEY_PATH_TO_TRANSFORMER", None)
        or isinstance(result, Exception)
        or context.operation_model.has_event_stream_output
    ):
        return _execute_result(self, context)
    compiled = _compiled_answer(context)
    if compiled is None:
        return _execute_result(self, context)
    body, content_type, status = compiled
    try:
        serialised = {} if body is None or result is None else body(result)
    except Exception:  # a value the compiled path does not mirror, or moto's own error to raise
        return _execute_result(self, context)
    text = json.dumps(serialised, indent=4 if moto_settings.PRETTIFY_RESPONSES else None)
    return status, {"Content-Type": content_type}, text


@speed_patch("json-answers")
def _install_json_answers():
    expect_source(_execute_result, "6333faa349b58671")
    expect_source(core_serialize.ResponseSerializer, "6266dfddaa30faa3")
    expect_source(core_serialize.BaseJSONSerializer, "e558d3b61d0694d4")
    expect_source(core_serialize.JSONSerializer, "665dba3e0d52aadb")
    expect_source(core_serialize.AttributePicker, "de1006e71db016d4")
    expect_source(core_serialize.XFormedAttributePicker, "198e800d0a4d84e4")
    # The alias providers that read the object rather than the shape, and how a dict is read.
    expect_source(core_serialize.ExplicitAlias, "50e6df2c5ef1bb8c")
    expect_source(core_serialize.ClassPrefixAlias, "badfb8d077e500ff")
    expect_source(core_utils._get_value_for_key, "563aa7bc75bd5bb0")
    if core_serialize.DEFAULT_ALIAS_PROVIDERS != [
        core_serialize.ExplicitAlias, core_serialize.ShapeNameAlias, core_serialize.NoAlias,
        core_serialize.ShapePrefixAlias, core_serialize.ClassPrefixAlias, core_serialize.ModelAlias,
    ]:
        raise RuntimeError("moto's attribute alias providers are not the ones the compiled serialisers were written for")
    core_responses.ActionResult.execute_result = _execute_result_compiled

# --- Kinesis: the cost of a call does not grow with the shard ----------------------------
#
# A shard's records are an OrderedDict keyed by sequence number, and `Shard.put_record` is
# the only writer: it inserts the last key + 1, so the keys rise one by one in insertion
# order. moto scans or copies the whole dict where that order answers at once.

Shard = kinesis_models.Shard
_get_records = Shard.get_records
_get_max_sequence_number = Shard.get_max_sequence_number
_get_min_sequence_number = Shard.get_min_sequence_number


def _last_sequence_number(self):
    # Fixes `list(self.records.keys())[-1]`: a copy of every key, for every record put.
    return next(reversed(self.records)) if self.records else 0


def _first_sequence_number(self):
    # Fixes `list(self.records.keys())[0]` (ListShards, DescribeStream).
    return next(iter(self.records)) if self.records else 0


def _get_records_from_position(self, last_sequence_id, limit):
    """moto's answer, found by position: records with a sequence number above
    `last_sequence_id`, oldest first, at most `limit` of them, and how far the last one
    returned is behind the newest record. moto walks the shard from its first record on every
    call instead."""
    last_sequence_int = int(last_sequence_id)
    records = self.records
    if limit is not None and (type(limit) is not int or limit < 1):
        # moto's own reading of odd limits: it checks the count after every record it passes,
        # so 0 reads nothing or everything, and a negative limit everything.
        return _get_records(self, last_sequence_id, limit)
    if not records:
        return [], last_sequence_int, 0
    first = next(iter(records))
    last = next(reversed(records))
    if last - first + 1 != len(records):
        return _get_records(self, last_sequence_id, limit)  # not one consecutive run of keys
    start = max(last_sequence_int + 1, first)
    if start > last:
        return [], last_sequence_int, 0
    end = last if limit is None else min(last, start + limit - 1)
    results = [records[sequence_number] for sequence_number in range(start, end + 1)]
    millis_behind_latest = int((records[last].created_at - results[-1].created_at) * 1000)
    return results, end, millis_behind_latest


@speed_patch("shard-sequence-numbers")
def _install_shard_sequence_numbers():
    expect_source(Shard.put_record, "e2d15174261bc63e")
    expect_source(_get_max_sequence_number, "eff48df162f5a63d")
    expect_source(_get_min_sequence_number, "acae970512147e4e")
    Shard.get_max_sequence_number = _last_sequence_number
    Shard.get_min_sequence_number = _first_sequence_number


@speed_patch("shard-reads")
def _install_shard_reads():
    expect_source(Shard.put_record, "e2d15174261bc63e")
    expect_source(_get_records, "1188a73a6b3db1f9")
    Shard.get_records = _get_records_from_position


# --- Garbage collection: the stored data is not scanned again and again ------------------
#
# Everything the emulator stores (items, records, their attribute objects) lives as long as
# the server, and CPython's full collection walks all of it whenever the long-lived heap has
# grown by a quarter: under a minute of 1,000 events/s, twenty full collections took about a
# third of the emulator's time. Young collections, which free the short-lived cycles of each
# request (parsed expressions, their copies), run less often but still regularly; the full
# one only after a thousand of the middle generation's, minutes apart rather than seconds.

@speed_patch("gc-threshold")
def _install_gc_threshold():
    gc.set_threshold(10_000, 50, 1_000)


# --- Serving: moto's server, its application behind the correctness layer ------------------

_run_simple = moto.server.run_simple


def _run_simple_for_eventline(hostname, port, application, *args, **kwargs):
    application = moto_correctness.EventlineApplication(application)
    return _run_simple(hostname, port, application, *args, **kwargs)


def install(without=()):
    """Installs every speed patch but those named in `without`, then moto_correctness (whose
    DynamoDB rules wrap the update and transaction paths the speed patches leave), and serves
    moto's application through the correctness layer. Once per process."""
    unknown = sorted(set(without) - set(SPEED_PATCHES))
    if unknown:
        raise RuntimeError(f"{WITHOUT}: no speed patch named {', '.join(unknown)}; the names: {', '.join(SPEED_PATCHES)}")
    if INSTALLED:
        raise RuntimeError("the launcher's patches are installed already")
    for name, install_patch in SPEED_PATCHES.items():
        if name not in without:
            install_patch()
            INSTALLED.append(name)
    moto_correctness.install()
    # moto.server.main calls the run_simple it imported from werkzeug.serving.
    moto.server.run_simple = _run_simple_for_eventline


def without_from_environment():
    """The speed patches `EVENTLINE_MOTO_WITHOUT` names (comma-separated) to leave out."""
    return [name.strip() for name in os.environ.get(WITHOUT, "").split(",") if name.strip()]


_without = without_from_environment()
install(_without)
if _without:
    sys.stderr.write(f"{Path(__file__).name}: without the speed patches {', '.join(_without)} ({WITHOUT})\n")
    sys.stderr.flush()

# --- Ending with the process that started it ----------------------------------------------

EXIT_WITH_PARENT = "--exit-with-parent"


def exit_when_stdin_closes():
    """With `--exit-with-parent`, the launcher serves until its standard input ends. The
    process that starts it gives it one end of a pipe and keeps the other: when that process
    ends, however it ends (SIGKILL included), the kernel closes its end and the launcher exits
    instead of running on orphaned. A parent-death signal would not do: Linux sends it when
    the starting thread ends, and async runtimes start children from worker threads."""

    def watch():
        try:
            while os.read(0, 4096):
                pass  # anything written is ignored; only the end counts
        except OSError:
            pass
        sys.stderr.write(f"{Path(__file__).name}: standard input closed: the process that started it has ended\n")
        sys.stderr.flush()
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


if __name__ == "__main__":
    arguments = sys.argv[1:]
    if EXIT_WITH_PARENT in arguments:
        arguments.remove(EXIT_WITH_PARENT)
        exit_when_stdin_closes()
    sys.argv[1:] = arguments  # moto's main reads sys.argv when given no arguments
    sys.exit(moto.server.main(arguments))

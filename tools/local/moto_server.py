#!/usr/bin/env python3
"""Run moto's server for the local stack, with these changes. Arguments are moto_server's,
and `--exit-with-parent`: exit when standard input closes (see `exit_when_stdin_closes`).

One request at a time. moto's server is threaded, but its models are not safe under
concurrent requests: two Kinesis puts can take the same sequence number, so one record
silently replaces the other, and nothing keeps DynamoDB transactions apart. Each connection
is still read and answered on its own thread; only the work inside moto is serialised.

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

Transactions. moto backs up the whole table before each action of a TransactWriteItems call,
so a transaction of N actions copies the table N times and the local stack slows down as the
table grows. Here only the items the call writes are backed up, and a cancelled transaction
puts exactly those back, so what callers observe is unchanged.

Cost per call. moto walks or copies a whole Kinesis shard on every put and read, hands every
record put to Docker for the stream's event source mapping (which the local stack plays
itself), runs its full expression machinery on every counter update, sorts every item of a
table to answer a query on one partition, walks the botocore model for every node of a JSON
request body, lists its own package directory to route each request, and (werkzeug, its
HTTP server) closes the connection after every answer and logs a line for each. Each patch below
says what it fixes; each leaves moto's answers as they were (tests in test_moto_server.py
compare them with moto's own code) and checks at start, by a digest of the source it
replaces or mirrors, that the installed moto is the one it was written against.
"""

import collections
import copy
import enum
import functools
import gc
import hashlib
import http
import inspect
import io
import json
import os
import random
import re
import socket
import struct
import sys
import threading
import types
import uuid
import zlib
from pathlib import Path
from urllib.parse import parse_qs

from werkzeug import serving as werkzeug_serving

import moto
import moto.server
from moto import backends as moto_backends
from moto import settings as moto_settings
from moto.core import parse as core_parse
from moto.core import responses as core_responses
from moto.core import serialize as core_serialize
from moto.core import utils as core_utils
from moto.dynamodb import comparisons, models
from moto.dynamodb.models import table as table_models
from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict
from moto.dynamodb.parsing import ast_nodes
from moto.dynamodb.parsing.executors import AddExecutor, SetExecutor
from moto.dynamodb.parsing.expressions import UpdateExpressionParser
from moto.dynamodb.parsing.validators import UpdateExpressionFunctionEvaluator, UpdateExpressionValidator
from moto.kinesis import models as kinesis_models
from moto.moto_server.werkzeug_app import MotoRequestHandler

import dynamodb_rules

# --- Guards: each patch below replaces or relies on moto internals of the pinned version ----


def _expect_source(function, digest):
    """Fail at start unless `function` is the moto code a patch here was written against."""
    actual = hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16]
    if actual != digest:
        raise RuntimeError(
            f"moto {moto.__version__}: {function.__module__}.{function.__qualname__} is not the code "
            f"the patch in {__file__} was written for (source digest {actual}, expected {digest}); "
            "check the patch against the new code, then update the digest"
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


_expect_source(_transact_write_items, "81db2cb7d94e39c9")
models.copy = types.SimpleNamespace(deepcopy=_deepcopy)
models.DynamoDBBackend.transact_write_items = _transact_write_items_with_item_backups

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
        # Numbers only, written plainly: moto's own arithmetic then never fails on them.
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


def _update_item_with_counter_path(
    self,
    table_name,
    key,
    update_expression,
    expression_attribute_names,
    expression_attribute_values,
    attribute_updates=None,
    expected=None,
    condition_expression=None,
    return_values_on_condition_check_failure=None,
):
    """moto's update_item, with counter updates (see `_counter_actions`) applied directly."""
    table = self.tables.get(table_name)
    plan = None
    if table is not None and table.stream_shard is None and not attribute_updates and not expected:
        if condition_expression is None and update_expression:
            plan = _counter_update_plan(
                table, update_expression, expression_attribute_names, expression_attribute_values
            )
    if plan is not None:
        # As moto: the expression must parse (a syntax error is moto's to report) before the key is read.
        _parsed_update_expression(update_expression)
        hash_value, range_value = _key_values(table, key)
        item = table.get_item(hash_value, range_value)
        # ADD needs a number where the attribute exists; anything else is moto's to report.
        if item is not None and any(
            kind == "ADD" and name in item.attrs and item.attrs[name].type != "N" for name, kind, _ in plan
        ):
            plan = None
    if plan is None:
        return _update_item(
            self,
            table_name,
            key,
            update_expression,
            expression_attribute_names,
            expression_attribute_values,
            attribute_updates=attribute_updates,
            expected=expected,
            condition_expression=condition_expression,
            return_values_on_condition_check_failure=return_values_on_condition_check_failure,
        )
    if item is None:
        data = {table.hash_key_attr: {hash_value.type: hash_value.value}}
        if range_value:
            data[table.range_key_attr] = {range_value.type: range_value.value}
        table.put_item(data)
        item = table.get_item(hash_value, range_value)
    _apply_counter_update(item, plan)
    return item


def _key_values(table, key):
    # As moto's update_item reads the key.
    if table.hash_key_attr in key and table.range_key_attr in key:
        return DynamoType(key[table.hash_key_attr]), DynamoType(key[table.range_key_attr])
    if table.hash_key_attr in key:
        return DynamoType(key[table.hash_key_attr]), None
    return DynamoType(key), None


# What the counter path mirrors: the update itself, its validators, ADD and SET.
_expect_source(_parse_update_expression, "2c00ed96d6e191f2")
_expect_source(_update_item, "218984588dd689a5")
_expect_source(UpdateExpressionValidator.get_ast_processors, "918400bbecd67e83")
_expect_source(UpdateExpressionFunctionEvaluator, "dfee5d859b7d6a32")
_expect_source(AddExecutor.execute, "dadbc08d83f73bdb")
_expect_source(SetExecutor.set, "a8b5f69f92794b46")
_expect_source(DynamoType.__add__, "c2852d8ddde02bb3")
UpdateExpressionParser.make = staticmethod(_parsed_update_expression)
models.DynamoDBBackend.update_item = _update_item_with_counter_path

# --- DynamoDB expressions: copied by their fields -----------------------------------------
#
# Every update that takes moto's own path deep-copies its parsed expression before validating
# it (the validator replaces the placeholders in the copy). A parsed expression is a tree of
# plain objects; copy.deepcopy reached each node through the pickle protocol (`__reduce_ex__`
# and `_reconstruct`), which cost more than the update. Here a node is copied the way that
# path copies it, field by field, without the detour: a new object of the same class whose
# fields are deep copies of the original's.

_NODE_COPY_HOOKS = ("__slots__", "__reduce__", "__reduce_ex__", "__getstate__", "__setstate__", "__copy__", "__deepcopy__")


def _node_deepcopy(self, memo):
    clone = type(self).__new__(type(self))
    memo[id(self)] = clone
    clone.__dict__.update({name: copy.deepcopy(value, memo) for name, value in self.__dict__.items()})
    return clone


def _node_classes(root):
    yield root
    for subclass in root.__subclasses__():
        yield from _node_classes(subclass)


for _node_class in _node_classes(ast_nodes.Node):
    if any(hook in vars(_node_class) for hook in _NODE_COPY_HOOKS):
        raise RuntimeError(f"moto's {_node_class.__name__} defines how it is copied; check the node copy patch")
ast_nodes.Node.__deepcopy__ = _node_deepcopy

# --- DynamoDB items and conditions --------------------------------------------------------

_item_init = Item.__init__


def _item_init_measured_once(self, hash_key, range_key, attrs):
    # Fixes building a new item attribute by attribute through LimitedSizeDict.__setitem__,
    # which re-measured every attribute set so far for each one. The item's size is checked
    # by the DynamoDB rules (dynamodb_rules.py) before it is stored.
    self.hash_key = hash_key
    self.range_key = range_key
    self.attrs = LimitedSizeDict()
    for key, value in attrs.items():
        dict.__setitem__(self.attrs, key, DynamoType(value))


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


_expect_source(_item_init, "d9c12b62cb921831")
_expect_source(_get_filter_expression, "0bb9e2d345c7f17f")
Item.__init__ = _item_init_measured_once
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


_expect_source(_query, "002b4d00be6df07c")
_expect_source(_all_items, "c80d2ee3c896acd0")
table_models.Table.query = _query_one_partition
table_models.Table.all_items = _all_items_of_the_queried_partition

# --- DynamoDB's rules on what it stores ---------------------------------------------------
#
# moto stores numbers DynamoDB refuses (more than 38 significant digits, magnitudes outside
# 1E-130 .. 9.99E+125), rounds sums to 28 digits without a word, and measures items its own
# way. dynamodb_rules.py refuses what DynamoDB refuses, on every write path, with its errors.
# Installed after the patches above: it wraps the update and transaction paths they set.

dynamodb_rules.install(_expect_source)

# --- Routing: moto's modules listed once --------------------------------------------------
#
# To route a request, moto lists its own package directory (a directory read and ~150 `isdir`
# calls) for every request. The installed package does not change while the server runs.

_list_of_moto_modules = moto_backends.list_of_moto_modules
_moto_modules = None


def _list_of_moto_modules_once():
    global _moto_modules
    if _moto_modules is None:
        _moto_modules = tuple(_list_of_moto_modules())
    return _moto_modules


_expect_source(_list_of_moto_modules, "4f741a10b06500e8")
moto_backends.list_of_moto_modules = _list_of_moto_modules_once

# --- JSON requests: parsed by converters compiled once per operation -------------------
#
# moto turns a JSON-protocol request (DynamoDB, Kinesis) into its parameters by walking the
# botocore shape of the operation for every node of the body, looking each handler up by
# name; for a transaction of 100 items that took longer than the transaction. Here each
# operation's walk is compiled once into plain functions that do the same per node: a
# structure keeps its known members that are not null, blobs are base64-decoded, numbers
# and timestamps converted, and anything without a conversion passed as it is. Handlers
# other than moto's own JSON ones (none for these services today) are called as moto would.

_parse_parameters = core_responses.BaseResponse.parse_parameters
_compiled_json_operations = {}


def _json_converter(parser, shape, compiled):
    """A function converting a JSON value of `shape` as `parser._parse_shape` would, or None
    where the value is kept as it is. `compiled` holds the structures, lists and maps done
    so far (shapes can be recursive: a DynamoDB map holds attribute values)."""
    kind = shape.type_name
    handler = getattr(type(parser), f"_parse_{kind}", None)
    if handler is None:
        return None  # moto's `_default_handle`
    if kind in ("structure", "list", "map"):
        key = (kind, shape.name)
        if key in compiled:
            slot = compiled[key]
            return slot if slot is not None else (lambda value, key=key: compiled[key](value))
        compiled[key] = None
        compiled[key] = convert = _json_container(parser, shape, handler, compiled)
        return convert
    if handler is core_parse.BaseJSONParser._parse_blob:
        return parser._blob_parser
    if handler is core_parse.BaseJSONParser._parse_timestamp:
        return parser._timestamp_parser
    if handler is core_parse.BaseJSONParser._parse_float:
        return lambda value: value if value is core_parse.UNDEFINED else float(value)
    if handler is core_parse.BaseJSONParser._parse_integer:
        return lambda value: value if value is core_parse.UNDEFINED else int(value)
    return lambda value: handler(parser, shape, value)


def _json_container(parser, shape, handler, compiled):
    kind = shape.type_name
    map_type = parser.MAP_TYPE
    if kind == "structure" and handler is core_parse.BaseJSONParser._parse_structure:
        if shape.is_document_type:
            return lambda value: value
        members = [
            (name, member.serialization.get("name", name), _json_converter(parser, member, compiled))
            for name, member in shape.members.items()
        ]
        by_json_name = {json_name: (name, convert) for name, json_name, convert in members}

        def structure(value):
            if value is None:
                return None
            parsed = map_type()
            if len(value) == 1:  # an attribute value, a transaction item: one member
                for json_name, raw in value.items():
                    member = by_json_name.get(json_name)
                    if member is not None and raw is not None:
                        name, convert = member
                        parsed[name] = raw if convert is None else convert(raw)
                return parsed
            for name, json_name, convert in members:
                raw = value.get(json_name)
                if raw is not None:
                    parsed[name] = raw if convert is None else convert(raw)
            return parsed

        return structure
    if kind == "list" and handler is core_parse.RequestParser._parse_list:
        convert = _json_converter(parser, shape.member, compiled)
        if convert is None:
            return list
        return lambda node: [convert(item) for item in node]
    if kind == "map" and handler is core_parse.RequestParser._parse_map:
        convert_key = _json_converter(parser, shape.key, compiled)
        convert_value = _json_converter(parser, shape.value, compiled)

        def mapping(value):
            parsed = map_type()
            for key, raw in value.items():
                parsed[key if convert_key is None else convert_key(key)] = (
                    raw if convert_value is None else convert_value(raw)
                )
            return parsed

        return mapping
    return lambda value: handler(parser, shape, value)


def _parse_parameters_compiled(self, request):
    service_model = core_responses.get_service_model(self.boto3_service_name)
    action = self._get_action()
    protocol = core_responses.determine_request_protocol(service_model, request.content_type)
    if core_responses.PROTOCOL_PARSERS[protocol] is not core_parse.JSONParser:
        return _parse_parameters(self, request)
    key = (service_model.service_name, action, self.PROTOCOL_PARSER_MAP_TYPE)
    operation = _compiled_json_operations.get(key)
    if operation is None:
        operation_model = service_model.operation_model(action)
        parser = core_parse.JSONParser(operation_model, map_type=self.PROTOCOL_PARSER_MAP_TYPE)
        shape = operation_model.input_shape
        convert = None if shape is None else _json_converter(parser, shape, {})
        operation = _compiled_json_operations[key] = (parser, shape, convert)
    parser, shape, convert = operation
    if shape is None:
        self.params = {}
        return
    body = parser._parse_body_as_json(request.data)
    self.params = body if convert is None else convert(body)


_expect_source(_parse_parameters, "fd3d04c9194814f4")
_expect_source(core_parse.RequestParser, "fd89167146d042a1")
_expect_source(core_parse.BaseJSONParser, "e6551b6433be7fe0")
_expect_source(core_parse.JSONParser, "203b5e65629fb3c5")
core_responses.BaseResponse.parse_parameters = _parse_parameters_compiled

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


_expect_source(_execute_result, "6333faa349b58671")
_expect_source(core_serialize.ResponseSerializer, "6266dfddaa30faa3")
_expect_source(core_serialize.BaseJSONSerializer, "e558d3b61d0694d4")
_expect_source(core_serialize.JSONSerializer, "665dba3e0d52aadb")
_expect_source(core_serialize.AttributePicker, "de1006e71db016d4")
_expect_source(core_serialize.XFormedAttributePicker, "198e800d0a4d84e4")
# The alias providers that read the object rather than the shape, and how a dict is read.
_expect_source(core_serialize.ExplicitAlias, "50e6df2c5ef1bb8c")
_expect_source(core_serialize.ClassPrefixAlias, "badfb8d077e500ff")
_expect_source(core_utils._get_value_for_key, "563aa7bc75bd5bb0")
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
Stream = kinesis_models.Stream
_get_records = Shard.get_records


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


def _put_record_without_lambda(self, partition_key, explicit_hash_key, data):
    # moto's `Stream.put_record` also hands every record to each event source mapping on the
    # stream by running the function in Docker: here that fails on every record (no Docker),
    # logs the failure and adds a CloudWatch log stream per record, and it would start a
    # container per record where a Docker API answered. The local stack's poller plays the
    # mapping (tools/local/src/poller.rs); the mapping stays defined in moto.
    shard = self.get_shard_for_key(partition_key, explicit_hash_key)
    sequence_number = shard.put_record(partition_key, data, explicit_hash_key)
    return sequence_number, shard.shard_id


_expect_source(Shard.get_max_sequence_number, "eff48df162f5a63d")
_expect_source(Shard.get_min_sequence_number, "acae970512147e4e")
_expect_source(Shard.put_record, "e2d15174261bc63e")
_expect_source(Shard.get_records, "1188a73a6b3db1f9")
_expect_source(Stream.put_record, "cafda0597b231b64")
Shard.get_max_sequence_number = _last_sequence_number
Shard.get_min_sequence_number = _first_sequence_number
Shard.get_records = _get_records_from_position
Stream.put_record = _put_record_without_lambda

# --- Garbage collection: the stored data is not scanned again and again ------------------
#
# Everything the emulator stores (items, records, their attribute objects) lives as long as
# the server, and CPython's full collection walks all of it whenever the long-lived heap has
# grown by a quarter: under a minute of 1,000 events/s, twenty full collections took about a
# third of the emulator's time. Young collections, which free the short-lived cycles of each
# request (parsed expressions, their copies), run less often but still regularly; the full
# one only after a thousand of the middle generation's, minutes apart rather than seconds.

gc.set_threshold(10_000, 50, 1_000)

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


class EventlineApplication:
    """moto's application, one request at a time, behind the fault layer."""

    def __init__(self, moto_app):
        self.moto_app = moto_app
        self.lock = FifoLock()
        self.faults = Faults()

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
            result = _consumed(self.moto_app(environ, start_response))
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


class KeepAliveRequestHandler(MotoRequestHandler):
    """moto's request handler (werkzeug's), keeping HTTP/1.1 connections open between requests.

    werkzeug closes every connection after one response, because after the application it
    drains whatever the client sent next to throw away an unread body, which on a kept-alive
    connection would be the next request. Every AWS call then paid a new connection, a new
    thread and a close. Here a request whose body has a known length is read whole first and
    the application (and that drain) read from the copy, so nothing of the next request is
    lost and the connection can stay open. A chunked body, an HTTP/1.0 client or a
    `Connection: close` request closes the connection after the answer, as before.

    werkzeug writes an answer's head and body separately; here they leave in one write
    (buffered until werkzeug flushes the answer), with Nagle's algorithm off, which would
    otherwise hold a small answer back until the client acknowledged the previous one.

    The request log keeps a line per answer that is not a success: at hundreds of calls a
    second, a "POST / 200" line for each took longer to write than many of the calls."""

    disable_nagle_algorithm = True
    wbufsize = -1
    keep_alive = False  # for this request; set once its head is read

    def run_wsgi(self):
        self.keep_alive = False
        length = self.headers.get("Content-Length")
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        if self.close_connection or chunked or (length is not None and not length.strip().isdigit()):
            return super().run_wsgi()
        if self.headers.get("Expect", "").lower().strip(" \t") == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.wfile.flush()
            del self.headers["Expect"]
        connection_rfile = self.rfile
        self.rfile = io.BytesIO(connection_rfile.read(int(length or 0)))
        self.keep_alive = True
        try:
            return super().run_wsgi()
        finally:
            self.rfile = connection_rfile

    def log_request(self, code="-", size="-"):
        status = getattr(code, "value", code)
        if isinstance(status, int) and status < 400:
            return
        super().log_request(code, size)

    def send_header(self, keyword, value):
        if self.keep_alive and keyword.lower() == "connection" and value.lower() == "close":
            return  # werkzeug's unconditional close; the client's own choice was honoured above
        super().send_header(keyword, value)


_run_simple = moto.server.run_simple


_expect_source(werkzeug_serving.WSGIRequestHandler.run_wsgi, "774df60c75afd439")


def _run_simple_serialised(hostname, port, application, *args, **kwargs):
    if kwargs.get("request_handler") is not MotoRequestHandler:
        raise RuntimeError("moto's server no longer serves through MotoRequestHandler")
    kwargs["request_handler"] = KeepAliveRequestHandler
    return _run_simple(hostname, port, EventlineApplication(application), *args, **kwargs)


# moto.server.main calls the run_simple it imported from werkzeug.serving.
moto.server.run_simple = _run_simple_serialised

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

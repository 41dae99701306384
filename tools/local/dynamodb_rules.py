"""DynamoDB's rules on what it stores, enforced on moto's write paths.

moto keeps numbers as text and computes with Python's Decimal (28 digits: a sum that needs
more is rounded without a word), and it measures items its own way (a number by the length
of its text, no overhead for lists and maps, 405,000 bytes at most). DynamoDB refuses:

  numbers with more than 38 significant digits, or a magnitude outside 1E-130 ..
  9.99999999999999999999999999999999999999E+125 (either sign; zero is fine): in a request
  value, in an item written, and as the result of `ADD` or `SET a = b + c` on stored numbers;

  items larger than 400 KB (409,600 bytes), measured as DynamoDB measures them: the UTF-8
  bytes of every attribute name, plus for each value the UTF-8 bytes of a string, the raw
  bytes of a binary, one byte per two significant digits of a number plus one, one byte for a
  boolean or null, the sum of a set's members, and for a list or map three bytes, plus one
  byte per element and the element (a map's element also its name).

`install()` makes moto refuse the same, with DynamoDB's errors, on every write that stores
something: PutItem, UpdateItem (the item as the update leaves it; a refused update leaves
the item as it was), BatchWriteItem (a refused item refuses the whole batch before anything
is written), TransactWriteItems (a refused item cancels the transaction with a
`ValidationError` reason at its position) and PartiQL statements, which write through the
same table method as PutItem. Number values in `ExpressionAttributeValues` are checked when
the request arrives, as DynamoDB checks them. Arithmetic runs exact; a result DynamoDB could
not store is refused, never rounded. moto's own item measure is turned off: the limit is
DynamoDB's alone. A table with a DynamoDB stream keeps the stream record of an update that is
refused after moto has applied it (the local stack's tables have no streams).
"""

import base64
import copy
import decimal
import functools
import inspect
import re
import threading

from moto.dynamodb import models
from moto.dynamodb import responses as dynamodb_responses
from moto.dynamodb.exceptions import IncorrectDataType, MockValidationException
from moto.dynamodb.models import table as table_models
from moto.dynamodb.models.dynamo_type import DynamoType, LimitedSizeDict

MAX_ITEM_SIZE = 400 * 1024
MAX_SIGNIFICANT_DIGITS = 38
# Powers of ten of the leading digit: 9.99...E+125 is the largest magnitude, 1E-130 the smallest.
MAX_POWER = 125
MIN_POWER = -130

TOO_MANY_DIGITS = "Attempting to store more than 38 significant digits in a Number"
OVERFLOW = "Number overflow. Attempting to store a number with magnitude larger than supported range"
UNDERFLOW = "Number underflow. Attempting to store a number with magnitude smaller than supported range"
ITEM_TOO_LARGE = "Item size has exceeded the maximum allowed size"
UPDATE_TOO_LARGE = "Item size to update has exceeded the maximum allowed size"

_CONTAINERS = frozenset(("M", "L", "SS", "NS", "BS"))
_NUMBER_TEXT = re.compile(r"[+-]?([0-9]*)(?:\.([0-9]*))?(?:[eE]([+-]?[0-9]+))?")


class RuleViolation(MockValidationException):
    """A write DynamoDB refuses: answered as its `ValidationException`."""


class ValidationError(Exception):
    """The same refusal inside a transaction. moto turns an action's error into a
    cancellation reason coded with the error's class name, as DynamoDB codes this one."""


# --- The rules, on DynamoDB JSON (`{"N": "1"}`) or moto's DynamoType values -----------------


def significant_digits_and_power(text):
    """(significant digits, power of ten of the leading digit) of a number's text, (0, 0) for
    zero, None for text that is not a number (moto reports that itself)."""
    if not isinstance(text, str):
        return None
    found = _NUMBER_TEXT.fullmatch(text)
    if found is None:
        return None
    whole, fraction, exponent = found.group(1), found.group(2) or "", found.group(3)
    digits = whole + fraction
    if not digits:
        return None
    stripped = digits.lstrip("0")
    if not stripped:
        return 0, 0
    leading_zeros = len(digits) - len(stripped)
    return len(stripped.rstrip("0")), len(whole) - 1 - leading_zeros + int(exponent or 0)


def number_error(text):
    """Why DynamoDB would not store the number `text`, or None."""
    measured = significant_digits_and_power(text)
    if measured is None:
        return None
    digits, power = measured
    if digits and power > MAX_POWER:
        return OVERFLOW
    if digits and power < MIN_POWER:
        return UNDERFLOW
    if digits > MAX_SIGNIFICANT_DIGITS:
        return TOO_MANY_DIGITS
    return None


def _utf8_size(text):
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _binary_size(content):
    if isinstance(content, (bytes, bytearray)):
        return len(content)
    try:
        return len(base64.b64decode(content, validate=True))
    except (ValueError, TypeError):
        return len(content)


@functools.lru_cache(maxsize=65536)
def number_size(text):
    measured = significant_digits_and_power(text)
    digits = measured[0] if measured else len(text)
    return (max(digits, 1) + 1) // 2 + 1


@functools.lru_cache(maxsize=65536)
def _number(text):
    return number_error(text), number_size(text)


def measure(value):
    """(the first number rule the value breaks at any depth or None, its size as DynamoDB
    counts it toward the item's) of a value in DynamoDB JSON or a moto DynamoType."""
    if type(value) is DynamoType:
        kind, content = value.type, value.value
    else:
        (kind, content), = value.items()
    if kind == "N":
        return _number(content)
    if kind == "S":
        return None, _utf8_size(content)
    if kind == "B":
        return None, _binary_size(content)
    if kind in ("BOOL", "NULL"):
        return None, 1
    if kind == "SS":
        return None, sum(map(_utf8_size, content))
    if kind == "BS":
        return None, sum(map(_binary_size, content))
    if kind == "NS":
        measured = [_number(text) for text in content]
    elif kind == "L":
        measured = [(error, 1 + size) for error, size in map(measure, content)]
    elif kind == "M":
        measured = [(error, 1 + _utf8_size(name) + size) for name, (error, size) in
                    ((name, measure(element)) for name, element in content.items())]
    else:
        return None, 0
    error = next((error for error, _ in measured if error), None)
    return error, sum(size for _, size in measured) + (0 if kind == "NS" else 3)


def value_error(value):
    return measure(value)[0]


def value_size(value):
    return measure(value)[1]


def item_size(attributes):
    return sum(_utf8_size(name) + value_size(value) for name, value in attributes.items())


def item_error(attributes, too_large=ITEM_TOO_LARGE):
    """The first rule an item as it would be stored breaks (its numbers, then its size), or
    None. Anything malformed is left for moto to report."""
    size = 0
    try:
        for name, value in attributes.items():
            error, value_size = measure(value)
            if error:
                return error
            size += _utf8_size(name) + value_size
    except (AttributeError, TypeError, ValueError):
        return None
    return too_large if size > MAX_ITEM_SIZE else None


def expression_values_error(values):
    """DynamoDB's refusal of a request whose `ExpressionAttributeValues` hold a number it
    would not store, or None."""
    if not isinstance(values, dict):
        return None
    for placeholder, value in values.items():
        try:
            error = value_error(value)
        except (AttributeError, TypeError, ValueError):
            continue
        if error:
            return f"ExpressionAttributeValues contains invalid value: {error} for key {placeholder}"
    return None


# --- Where moto writes --------------------------------------------------------------------

_context = threading.local()


def refuse(message):
    """Raises DynamoDB's refusal of an item: a ValidationException, or inside a transaction
    the cancellation reason of the action at hand."""
    if getattr(_context, "transaction", False):
        raise ValidationError(message)
    raise RuleViolation(message)


def _refuse_request(values):
    error = expression_values_error(values)
    if error:
        raise RuleViolation(error)


# A Decimal context in which the sums and differences of numbers DynamoDB can store (at most
# 38 digits, powers 125 down to -130: about 300 digits) are exact; anything that would round
# raises Inexact instead.
_EXACT = decimal.Context(
    prec=1000,
    Emax=decimal.MAX_EMAX,
    Emin=decimal.MIN_EMIN,
    traps=[decimal.Inexact, decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
)


def _exact_arithmetic():
    return decimal.localcontext(_EXACT)


def _operand(text):
    # As moto reads an operand, and exponent forms ("1E-130"), which moto's int() refused.
    if "." in text or "e" in text or "E" in text:
        return decimal.Decimal(text)
    return int(text)


def _add(self, other):
    # moto's DynamoType.__add__, reading every number DynamoDB takes; the caller's context
    # (_exact_arithmetic in an update) decides the precision.
    if self.type != other.type:
        raise TypeError("Different types of operandi is not allowed.")
    if not self.is_number():
        raise IncorrectDataType()
    return DynamoType({"N": f"{_operand(self.value) + _operand(other.value)}"})


def _subtract(self, other):
    # moto's DynamoType.__sub__, likewise.
    if self.type != other.type:
        raise TypeError("Different types of operandi is not allowed.")
    if self.type != "N":
        raise TypeError("Sum only supported for Numbers.")
    return DynamoType({"N": f"{_operand(self.value) - _operand(other.value)}"})


def _key_values(table, key):
    if table.range_key_attr is not None and table.range_key_attr in key:
        return DynamoType(key[table.hash_key_attr]), DynamoType(key[table.range_key_attr])
    return DynamoType(key[table.hash_key_attr]), None


def _snapshot(table, key):
    """Enough of the item at `key` to put it back as it is now; None if it cannot be read."""
    try:
        hash_value, range_value = _key_values(table, key)
        item = table.get_item(hash_value, range_value)
    except Exception:  # a malformed key: moto reports it, and writes nothing
        return None
    if item is None:
        return hash_value, range_value, None, None
    # moto changes lists, maps and sets in place, and replaces other values.
    attributes = {name: copy.deepcopy(v) if v.type in _CONTAINERS else v for name, v in item.attrs.items()}
    return hash_value, range_value, item, attributes


def _restore(table, snapshot):
    hash_value, range_value, item, attributes = snapshot
    if item is None:
        if table.get_item(hash_value, range_value) is not None:
            table.delete_item(hash_value, range_value)
        return
    dict.clear(item.attrs)
    dict.update(item.attrs, attributes)
    if range_value is None:
        table.items[hash_value] = item
    else:
        table.items[hash_value][range_value] = item


def _argument(function, name):
    """A reader of argument `name` of a call to `function` from its (args, kwargs)."""
    parameter = inspect.signature(function).parameters[name]
    position = list(inspect.signature(function).parameters).index(name)

    def read(args, kwargs):
        if name in kwargs:
            return kwargs[name]
        if len(args) > position:
            return args[position]
        return parameter.default

    return read


def _table_put_item_within_rules(table_put_item):
    @functools.wraps(table_put_item)
    def put_item(self, item_attrs, *args, **kwargs):
        # Every write of a whole item: PutItem, BatchWriteItem, a transaction's Put, PartiQL,
        # and the key-only item an update of a new key starts from.
        error = item_error(item_attrs) if isinstance(item_attrs, dict) else None
        if error:
            refuse(error)
        return table_put_item(self, item_attrs, *args, **kwargs)

    return put_item


def _put_item_within_rules(backend_put_item):
    values = _argument(backend_put_item, "expression_attribute_values")

    @functools.wraps(backend_put_item)
    def put_item(*args, **kwargs):
        _refuse_request(values(args, kwargs))
        return backend_put_item(*args, **kwargs)

    return put_item


def _delete_item_within_rules(backend_delete_item):
    values = _argument(backend_delete_item, "expression_attribute_values")

    @functools.wraps(backend_delete_item)
    def delete_item(*args, **kwargs):
        _refuse_request(values(args, kwargs))
        return backend_delete_item(*args, **kwargs)

    return delete_item


def _update_item_within_rules(backend_update_item):
    table_name = _argument(backend_update_item, "table_name")
    key = _argument(backend_update_item, "key")
    values = _argument(backend_update_item, "expression_attribute_values")

    @functools.wraps(backend_update_item)
    def update_item(self, *args, **kwargs):
        _refuse_request(values((self, *args), kwargs))
        table = self.tables.get(table_name((self, *args), kwargs))
        item_key = key((self, *args), kwargs)
        snapshot = _snapshot(table, item_key) if table is not None and isinstance(item_key, dict) else None
        try:
            with _exact_arithmetic():
                try:
                    item = backend_update_item(self, *args, **kwargs)
                except decimal.Inexact:
                    refuse(TOO_MANY_DIGITS)
            error = item_error(item.attrs, too_large=UPDATE_TOO_LARGE)
            if error:
                refuse(error)
            return item
        except BaseException:
            # DynamoDB applies an update whole or not at all; moto stops where it fails.
            if snapshot is not None:
                _restore(table, snapshot)
            raise

    return update_item


def _transact_write_items_within_rules(transact_write_items):
    @functools.wraps(transact_write_items)
    def transact(self, transact_items, *args, **kwargs):
        for action in transact_items if isinstance(transact_items, list) else ():
            for operation in action.values() if isinstance(action, dict) else ():
                if isinstance(operation, dict):
                    _refuse_request(operation.get("ExpressionAttributeValues"))
        _context.transaction = True
        try:
            return transact_write_items(self, transact_items, *args, **kwargs)
        finally:
            _context.transaction = False

    return transact


def _batch_write_item_within_rules(batch_write_item):
    @functools.wraps(batch_write_item)
    def batch(self, *args, **kwargs):
        # DynamoDB refuses the whole batch; moto would write the items before the refused one.
        requests = self.body.get("RequestItems") if isinstance(self.body, dict) else None
        for table_requests in requests.values() if isinstance(requests, dict) else ():
            for request in table_requests if isinstance(table_requests, list) else ():
                put = request.get("PutRequest") if isinstance(request, dict) else None
                item = put.get("Item") if isinstance(put, dict) else None
                error = item_error(item) if isinstance(item, dict) else None
                if error:
                    raise RuleViolation(error)
        return batch_write_item(self, *args, **kwargs)

    return batch


def install(expect_source):
    """Makes moto keep DynamoDB's rules. `expect_source(function, digest)` fails unless the
    moto code a patch relies on is the code it was written against."""
    expect_source(LimitedSizeDict.__setitem__, "d979580fdbe14f79")
    expect_source(table_models.Table.put_item, "de23933013ef8426")
    expect_source(dynamodb_responses.DynamoHandler.batch_write_item, "26221a09e2b2b1fd")
    expect_source(DynamoType.__add__, "c2852d8ddde02bb3")
    expect_source(DynamoType.__sub__, "1ccbee699609375d")
    # moto's own item measure is replaced by DynamoDB's, checked once the whole item is known.
    LimitedSizeDict.__setitem__ = dict.__setitem__
    DynamoType.__add__ = _add
    DynamoType.__sub__ = _subtract
    table_models.Table.put_item = _table_put_item_within_rules(table_models.Table.put_item)
    backend = models.DynamoDBBackend
    backend.put_item = _put_item_within_rules(backend.put_item)
    backend.delete_item = _delete_item_within_rules(backend.delete_item)
    backend.update_item = _update_item_within_rules(backend.update_item)
    backend.transact_write_items = _transact_write_items_within_rules(backend.transact_write_items)
    dynamodb_responses.DynamoHandler.batch_write_item = _batch_write_item_within_rules(
        dynamodb_responses.DynamoHandler.batch_write_item
    )

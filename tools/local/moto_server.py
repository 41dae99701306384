#!/usr/bin/env python3
"""Run moto's server for the local stack, with one change to its DynamoDB transactions.

moto backs up the whole table before each action of a TransactWriteItems call, so a
transaction of N actions copies the table N times and the local stack slows down as the
table grows. Here the backup is taken once per table per call; a cancelled transaction
still rolls back to it, so what callers observe is unchanged. Arguments are moto_server's.
"""

import copy
import sys
import threading
import types

from moto.dynamodb import models
from moto.server import main

_backups = threading.local()


def _deepcopy(value, memo=None):
    taken = getattr(_backups, "taken", None)
    if taken is None:
        return copy.deepcopy(value, memo)
    if id(value) not in taken:
        taken[id(value)] = copy.deepcopy(value, memo)
    return taken[id(value)]


_transact_write_items = models.DynamoDBBackend.transact_write_items


def _transact_write_items_with_one_backup(self, transact_items):
    _backups.taken = {}
    try:
        return _transact_write_items(self, transact_items)
    finally:
        _backups.taken = None


models.copy = types.SimpleNamespace(deepcopy=_deepcopy)
models.DynamoDBBackend.transact_write_items = _transact_write_items_with_one_backup

if __name__ == "__main__":
    sys.exit(main())

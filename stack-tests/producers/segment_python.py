"""Sends a track, an identify and a page call to Eventline with Segment's Python SDK
(segment-analytics-python), gzip on, as a user would configure it. Exits non-zero when the
SDK reports an error. Usage: segment_python.py HOST WRITE_KEY"""

import json
import sys

import segment.analytics as analytics

host, write_key = sys.argv[1], sys.argv[2]
analytics.write_key = write_key
analytics.host = host
analytics.gzip = True
analytics.sync_mode = True
errors = []
analytics.on_error = lambda error, batch: errors.append(str(error))

analytics.track("py-user", "Order Completed", {"revenue": 12.5, "currency": "EUR"}, message_id="py-track-1")
analytics.identify("py-user", {"plan": "pro", "seats": 3}, message_id="py-identify-1")
analytics.page("py-user", "Docs", "Getting started", {"path": "/docs/start"}, message_id="py-page-1")
analytics.flush()

if errors:
    print(json.dumps(errors))
    sys.exit(1)

"""The last answers of the metrics call, as JSON bytes, reused while the series is unchanged.

Twenty pages polling one run ask for the same downsampled series; between two trainer
flushes (one a second) the answer is the same, so all but the first cost one index seek
(the series' last row) instead of a thousand.
"""

from __future__ import annotations

import threading
from collections import OrderedDict


class SeriesCache:
    def __init__(self, max_entries: int = 256):
        self.max_entries = max_entries
        self._items: OrderedDict[tuple, tuple] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple, version: tuple) -> bytes | None:
        with self._lock:
            item = self._items.get(key)
            if item is None or item[0] != version:
                return None
            self._items.move_to_end(key)
            return item[1]

    def put(self, key: tuple, version: tuple, body: bytes) -> None:
        with self._lock:
            self._items[key] = (version, body)
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

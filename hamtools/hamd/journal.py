"""The event journal: one JSON line per event (time, entity, condition, what happened,
cumulative counts: seed 002's crash log design), bounded in size by rotation to a single
`.1` file, so it can never fill a disk. `hamctl events` reads it.
"""

from hamtools.core import cjson
import os


class Journal:
    def __init__(self, path: str, clock, max_bytes: int = 512 * 1024):
        self.path = path
        self.clock = clock
        self.max_bytes = max_bytes
        self._file = open(path, "a", buffering=1, encoding="utf-8")

    def record(self, entity: str | None, condition: str | None, what: str, **fields) -> None:
        event = {"time": round(self.clock.time(), 6), "entity": entity, "condition": condition,
                 "what": what}
        event.update((k, v) for k, v in fields.items() if v is not None)
        self._file.write(cjson.dumps(event) + "\n")
        if self._file.tell() > self.max_bytes:
            self._file.close()
            os.replace(self.path, self.path + ".1")
            self._file = open(self.path, "a", buffering=1, encoding="utf-8")

    def close(self) -> None:
        self._file.close()

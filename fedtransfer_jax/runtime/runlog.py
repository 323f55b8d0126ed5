"""`metrics.jsonl`: one JSON object per line (training rounds, evaluations), appended and flushed as the
run goes, so a crash loses at most the line in flight. On resume, `drop` removes the rows a restored
federation will write again (rewritten atomically), so every (method, round) appears once.

With several processes only process 0 keeps the file (`enabled=False` elsewhere: writes are dropped, no
rows are read), since every process runs the same rounds and would write the same lines."""

from __future__ import annotations

import json
import os
from typing import Callable

from fedtransfer_jax.runtime import io_utils


class MetricsLog:
    def __init__(self, path: str, *, enabled: bool = True):
        self.path = path
        self.enabled = enabled
        self._f = None
        if enabled:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._f = open(path, "a")

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self._f.write(json.dumps(io_utils._jsonable(record)) + "\n")
        self._f.flush()

    def rows(self) -> list[dict]:
        if not self.enabled:
            return []
        self._f.flush()
        out = []
        with open(self.path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut by a crash: drop it
                    continue
        return out

    def drop(self, predicate: Callable[[dict], bool]) -> int:
        """Removes the rows for which `predicate` is true; returns how many."""
        rows = self.rows()
        keep = [r for r in rows if not predicate(r)]
        if len(keep) == len(rows):
            return 0
        self._f.close()
        io_utils.write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in keep))
        self._f = open(self.path, "a")
        return len(rows) - len(keep)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()

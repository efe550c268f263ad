"""Reading a result's endpoints, at most `max_workers` at a time, started in
endpoint order, their batches kept in endpoint order, two ways:

- `batches` (streaming): one thread per endpoint, batches handed to the
  caller through a queue per endpoint. With a bounded queue, memory stays
  bounded however large the result: a reader ahead of the caller waits
  until the caller catches up.
- `collect` (a whole result): the endpoints' streams are read in turn from
  the caller's own thread. gRPC receives every stream in parallel on its
  own threads either way; what moves to the caller's thread is the copy of
  each message into one buffer, so the buffers come from one allocator
  arena that keeps its freed memory between reads. From reader threads,
  each read faulted in fresh pages for most of what it received (measured
  in benches/README.md: a 850 MB scan 1.4x faster this way).

With `runs` (a read whose endpoints were dealt runs of that many rows
round-robin, `ReadNotes.dealt_rows`), the batches come in the files' order
instead: `runs` rows from each endpoint in turn.
"""

import queue
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

_DONE = object()


class _Failure:
    def __init__(self, error):
        self.error = error


def collect(open_reader, endpoints, max_workers, on_batch=None, on_metadata=None, runs=0):
    """Every record batch of every endpoint, in endpoint order (with
    `runs`, in the dealt runs' order), read from this thread: up to
    `max_workers` streams open at once, each read one message at a time in
    turn (a stream that has nothing yet is waited for; the others keep
    receiving meanwhile). `on_batch(batch)` is called as each batch
    arrives. A failure cancels the streams still open."""
    endpoints = list(endpoints)
    got = [[] for _ in endpoints]
    waiting = iter(range(len(endpoints)))
    open_now = []

    def start():
        i = next(waiting, None)
        if i is not None:
            open_now.append((i, open_reader(endpoints[i], i)))

    try:
        for _ in range(max(1, min(max_workers, len(endpoints)))):
            start()
        while open_now:
            for entry in list(open_now):
                i, reader = entry
                try:
                    chunk = reader.read_chunk()
                except StopIteration:
                    open_now.remove(entry)
                    start()
                    continue
                if chunk.data is None:
                    if on_metadata is not None and chunk.app_metadata is not None:
                        on_metadata(chunk.app_metadata.to_pybytes())
                    continue
                got[i].append(chunk.data)
                if on_batch is not None:
                    on_batch(chunk.data)
    except BaseException:
        for _, reader in open_now:
            try:
                reader.cancel()
            except Exception:
                pass
        raise
    if runs > 0 and len(got) > 1:
        return list(_in_runs([_Rows(iter(part).__next__) for part in got], runs))
    return [b for part in got for b in part]


class _Rows:
    """One endpoint's rows, taken a number at a time: `next_batch()` gives
    its next batch, raising StopIteration at its end."""

    def __init__(self, next_batch):
        self._next = next_batch
        self._left = None
        self.ended = False

    def take(self, n):
        """Up to `n` rows, as batches (slices of the endpoint's, no copy)."""
        while n > 0 and not self.ended:
            if self._left is None or self._left.num_rows == 0:
                try:
                    self._left = self._next()
                except StopIteration:
                    self.ended = True
                    return
                continue
            part = self._left.slice(0, n)
            self._left = self._left.slice(part.num_rows)
            n -= part.num_rows
            yield part

    def rest(self):
        """Every batch left, as they come."""
        if self._left is not None and self._left.num_rows > 0:
            yield self._left
        self._left = None
        while not self.ended:
            try:
                yield self._next()
            except StopIteration:
                self.ended = True


def _in_runs(parts, runs):
    """The batches of dealt endpoints in the files' order: `runs` rows of
    each in turn. Endpoint i holds runs i, i + n, ...: once one has run out
    every later one has, so what is left (nothing, unless the server dealt
    otherwise) follows in endpoint order, never dropped."""
    while not any(p.ended for p in parts):
        for p in parts:
            if p.ended:
                break
            yield from p.take(runs)
    for p in parts:
        yield from p.rest()


def batches(open_reader, endpoints, max_workers, buffer=None, on_metadata=None, runs=0):
    """Yield the record batches of every endpoint, in endpoint order (with
    `runs`, in the dealt runs' order).

    `open_reader(endpoint, index)` returns a pyarrow FlightStreamReader. `buffer`
    is how many batches each endpoint may read ahead of the caller (None:
    no limit, for callers that keep every batch anyway). Stopping the
    iteration early cancels the endpoints still being read. Messages that
    carry only application metadata (a privacy receipt) are handed to
    `on_metadata(bytes)`, if given."""
    endpoints = list(endpoints)
    if not endpoints:
        return
    stop = threading.Event()
    queues = [queue.Queue(maxsize=buffer or 0) for _ in endpoints]
    readers = []
    lock = threading.Lock()

    def put(q, item):
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce(i):
        if stop.is_set():
            return
        try:
            reader = open_reader(endpoints[i], i)
            with lock:
                readers.append(reader)
            while True:
                try:
                    chunk = reader.read_chunk()
                except StopIteration:
                    break
                if chunk.data is None:
                    if on_metadata is not None and chunk.app_metadata is not None:
                        on_metadata(chunk.app_metadata.to_pybytes())
                    continue
                if not put(queues[i], chunk.data):
                    reader.cancel()
                    return
            put(queues[i], _DONE)
        except BaseException as e:  # handed to the caller, raised there
            put(queues[i], _Failure(e))

    # Runs are taken from every endpoint in turn, so every endpoint is read
    # at once (each still at most `buffer` batches ahead): with fewer
    # readers, the turn of an endpoint not started yet would never come.
    dealt = runs > 0 and len(endpoints) > 1
    workers = len(endpoints) if dealt else max(1, min(max_workers, len(endpoints)))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="veil-read")
    for i in range(len(endpoints)):
        pool.submit(produce, i)

    def taker(q):
        def next_batch():
            while True:
                # In short waits, so Ctrl-C is seen at once.
                try:
                    item = q.get(timeout=0.1)
                    break
                except queue.Empty:
                    continue
            if item is _DONE:
                raise StopIteration
            if isinstance(item, _Failure):
                raise item.error
            return item

        return next_batch

    try:
        parts = [_Rows(taker(q)) for q in queues]
        if dealt:
            yield from _in_runs(parts, runs)
        else:
            for p in parts:
                yield from p.rest()
    finally:
        stop.set()
        with lock:
            for r in readers:
                try:
                    r.cancel()
                except Exception:
                    pass
        pool.shutdown(wait=False, cancel_futures=True)


class Progress:
    """Reports rows read: to a callback `fn(rows, total)` (total None when
    the server can't know it in advance), or as a tqdm bar with
    `progress=True` (a plain line on stderr when tqdm is not installed)."""

    def __init__(self, progress, total, what):
        self.rows = 0
        self.total = total if total is not None and total >= 0 else None
        self._fn = None
        self._bar = None
        if progress is True:
            try:
                from tqdm.auto import tqdm

                self._bar = tqdm(total=self.total, unit=" rows", desc=what, unit_scale=True)
            except ImportError:
                self._fn = self._line
                self._what = what
        elif callable(progress):
            self._fn = progress
        elif progress not in (None, False):
            raise TypeError("progress is True (a tqdm bar) or a function called with (rows, total)")

    def _line(self, rows, total):
        of = f" of {total:,}" if total is not None else ""
        print(f"\r{self._what}: {rows:,}{of} rows", end="", file=sys.stderr, flush=True)

    def add(self, n):
        self.rows += n
        if self._bar is not None:
            self._bar.update(n)
        elif self._fn is not None:
            self._fn(self.rows, self.total)

    def close(self):
        if self._bar is not None:
            self._bar.close()
        elif self._fn is not None and self._fn == self._line:
            print(file=sys.stderr)

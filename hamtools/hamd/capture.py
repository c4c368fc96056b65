"""A service's stdout and stderr, read by ham's loop into syslog or a size-rotated file.

Destinations (spec "stdout", "stderr"):
  inherit         ham's own fd
  null            /dev/null
  syslog          a message per line, ident = entity name with the service's pid, LOG_DAEMON;
                  stdout at LOG_INFO, stderr at LOG_WARNING
  file:/abs/path  appended; before it would pass log_max_bytes it is renamed (atomically) to
                  path.1, path.1 to path.2 … keeping log_keep old files; cut at line ends
  stdout          (stderr only) the very pipe or file stdout has, so their order is kept

For syslog and files the child writes into a pipe; ham reads the other end without blocking,
at most READ_SIZE bytes a wakeup, and holds a partial line until its newline comes or it
reaches LINE_MAX bytes. A file is opened before the service starts, so a bad path is an
error then; outputs to the same path share one file and its rotation.

Use: streams = capture.open(spec); start the child with streams.stdout and streams.stderr;
streams.attach(pid) after, or streams.abandon() when the start failed.
"""

import os

from hamtools.core.log import LOG_INFO, LOG_WARNING, Syslog

READ_SIZE = 65536
LINE_MAX = 65536
FILE_MODE = 0o640  # service output may hold what only its operators should read


class Capture:
    """Every captured output of ham's services, on ham's loop."""

    def __init__(self, loop, log):
        self.loop = loop
        self.log = log  # log(level, message), ham's activity log
        self._files: dict[str, RotatingFile] = {}
        self._readers: set[_Reader] = set()

    @property
    def reading(self) -> int:
        """How many pipes are still read (a service's output not yet at its end)."""
        return len(self._readers)

    def open(self, spec: dict) -> "Streams":
        """The child's ends for spec's stdout and stderr (raises OSError for a bad file)."""
        streams = Streams(self)
        try:
            streams.stdout = self._end(streams, spec["stdout"], spec, LOG_INFO)
            streams.stderr = (streams.stdout if spec["stderr"] == "stdout"
                              else self._end(streams, spec["stderr"], spec, LOG_WARNING))
        except BaseException:
            streams.abandon()
            raise
        return streams

    def _end(self, streams: "Streams", where: str, spec: dict, priority: int) -> int | None:
        if where == "inherit":
            return None
        if where == "null":
            fd = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
            streams.child_fds.append(fd)
            return fd
        if where != "syslog" and not where.startswith("file:/"):
            raise ValueError(f"unknown output destination {where!r}")
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        streams.child_fds.append(write_end)
        try:
            sink = (_SyslogSink(spec["name"], priority) if where == "syslog"
                    else self._file(where[len("file:"):], spec))
        except BaseException:
            os.close(read_end)
            raise
        os.set_blocking(read_end, False)
        streams.readers.append(_Reader(self, read_end, sink))
        return write_end

    def _file(self, path: str, spec: dict) -> "RotatingFile":
        shared = self._files.get(path)
        if shared is None:
            shared = self._files[path] = RotatingFile(path, spec["log_max_bytes"], spec["log_keep"])
        shared.users += 1
        return shared

    def release(self, sink) -> None:
        if isinstance(sink, RotatingFile):
            sink.users -= 1
            if sink.users:
                return
            del self._files[sink.path]
        sink.close()

    def close(self) -> None:
        """Take what is already in the pipes, then close every reader and file."""
        for reader in list(self._readers):
            reader.readable()
            reader.close()


class Streams:
    """One start's outputs: stdout/stderr are the fds to give the child (None: inherit)."""

    def __init__(self, capture: Capture):
        self.capture = capture
        self.stdout: int | None = None
        self.stderr: int | None = None
        self.child_fds: list[int] = []
        self.readers: list[_Reader] = []

    def attach(self, pid: int) -> None:
        """The child runs: drop ham's copies of its ends and start reading."""
        self._close_child_fds()
        for reader in self.readers:
            reader.start(pid)
        self.readers = []

    def abandon(self) -> None:
        """The child never started: close everything."""
        self._close_child_fds()
        for reader in self.readers:
            reader.close()
        self.readers = []

    def _close_child_fds(self) -> None:
        for fd in self.child_fds:
            os.close(fd)
        self.child_fds = []


class _Reader:
    """ham's end of one output pipe."""

    def __init__(self, capture: Capture, fd: int, sink):
        self.capture = capture
        self.fd = fd
        self.sink = sink
        self.partial = b""
        self.registered = False

    def start(self, pid: int) -> None:
        if isinstance(self.sink, Syslog):
            self.sink.pid = pid  # the lines are the service's, not ham's
        self.capture._readers.add(self)
        self.capture.loop.add_reader(self.fd, self.readable)
        self.registered = True

    def readable(self) -> None:
        try:
            data = os.read(self.fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # every writer has gone
            self.close()
            return
        data = self.partial + data
        end = data.rfind(b"\n") + 1
        while len(data) - end >= LINE_MAX:  # a line that long is passed on in pieces
            end += LINE_MAX
        self.partial = data[end:]
        if end:
            self._write(data[:end])

    def _write(self, block: bytes) -> None:
        try:
            self.sink.write(block)
        except OSError as err:  # a full disk loses output, never ham
            self.capture.log(1, f"{self.sink.describe()}: output lost: {err.strerror}")

    def close(self) -> None:
        if self.fd < 0:
            return
        if self.partial:
            self._write(self.partial)
            self.partial = b""
        if self.registered:
            self.capture.loop.remove_reader(self.fd)
            self.capture._readers.discard(self)
        os.close(self.fd)
        self.fd = -1
        self.capture.release(self.sink)


class _SyslogSink(Syslog):
    def __init__(self, name: str, priority: int):
        super().__init__(name)
        self.priority = priority

    def write(self, block: bytes) -> None:
        for line in block.split(b"\n"):
            if line:  # an empty line says nothing in syslog
                self.send(self.priority, line.decode("utf-8", "replace"))

    def describe(self) -> str:
        return f"syslog {self.ident}"


class RotatingFile:
    """An append-only file kept under max_bytes by renaming it to path.1 … path.keep."""

    def __init__(self, path: str, max_bytes: int, keep: int):
        if max_bytes <= 0 or keep < 0:
            raise ValueError(f"{path}: log_max_bytes must be > 0 and log_keep >= 0")
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self.users = 0
        self.fd = self._open()
        self.size = os.fstat(self.fd).st_size

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        except OSError as err:
            raise OSError(err.errno, f"output file {self.path}: {err.strerror}") from None

    def write(self, block: bytes) -> None:
        """Append block (whole lines, or a piece of an over-long one), rotating at line ends."""
        while block:
            room = self.max_bytes - self.size
            cut = len(block) if len(block) <= room else block.rfind(b"\n", 0, room) + 1
            if cut == 0 and self.size == 0:  # a line longer than a whole file gets one alone
                cut = block.find(b"\n") + 1 or len(block)
            if cut:
                self._append(block[:cut])
                block = block[cut:]
            if block:
                self.rotate()

    def _append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            self.size += written
            view = view[written:]

    def rotate(self) -> None:
        for n in range(self.keep - 1, 0, -1):
            try:
                os.replace(f"{self.path}.{n}", f"{self.path}.{n + 1}")
            except FileNotFoundError:
                pass
        try:
            if self.keep:
                os.replace(self.path, f"{self.path}.1")
            else:
                os.unlink(self.path)
        except FileNotFoundError:
            pass  # removed by someone else: a fresh file all the same
        os.close(self.fd)
        self.fd = self._open()
        self.size = 0

    def describe(self) -> str:
        return self.path

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

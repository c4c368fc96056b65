"""Small real servers for the sockmon tests (run as a program, never imported by pytest).

    python sockmon_servers.py unix PATH [--seqpacket] [--idle-close SECS] [--close-at-once]
    python sockmon_servers.py tcp PORTFILE [--host ADDR] [--port N] [--idle-close SECS]

Prints "ready" once listening. SIGTERM makes it close everything and exit 0 (a clean exit);
SIGKILL is the crash. --idle-close closes each connection after SECS without traffic, the way
servers drop idle clients; --close-at-once closes every connection as soon as it is accepted.
--fork-holder forks, for each accepted connection, a child that closes the listener and just
holds the connection (a CGI-style worker: the server's death then brings no EOF).
--detach-after-first forks after the first connection: the parent (the process that called
listen()) exits 0 and the child goes on serving (a server that daemonizes late).
--host ADDR listens there (default 127.0.0.1); --port N on that port (a restarted server on
the same port), else on any free one.
--slow-death SECS: SIGUSR1 makes it close its connections, wait SECS (a new connection waits
unaccepted in the listen queue), then SIGKILL itself: a crash whose connections go down
well before its listener (a real SIGKILL does the same within microseconds).
Each accepted connection is logged in PATH.count / PORTFILE.count: one line each, the wall
time of the accept (time.time(), comparable with a script's `date +%s.%N` and the test's).
"""

import os
import selectors
import signal
import socket
import sys
import time


def main(argv: list[str]) -> int:
    kind, where, *options = argv
    idle = float(options[options.index("--idle-close") + 1]) if "--idle-close" in options else None
    at_once = "--close-at-once" in options
    if kind == "unix":
        sock_type = socket.SOCK_SEQPACKET if "--seqpacket" in options else socket.SOCK_STREAM
        listener = socket.socket(socket.AF_UNIX, sock_type)
        try:
            os.unlink(where)
        except FileNotFoundError:
            pass
        listener.bind(where)
    else:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        port = int(options[options.index("--port") + 1]) if "--port" in options else 0
        host = options[options.index("--host") + 1] if "--host" in options else "127.0.0.1"
        listener.bind((host, port))
        with open(where + ".tmp", "w") as handle:
            handle.write(str(listener.getsockname()[1]))
        os.replace(where + ".tmp", where)
    listener.listen(16)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    opened: dict[socket.socket, float] = {}
    if "--slow-death" in options:
        delay = float(options[options.index("--slow-death") + 1])

        def slow_death(*_):
            for conn in opened:
                conn.close()
            time.sleep(delay)
            os.kill(os.getpid(), signal.SIGKILL)

        signal.signal(signal.SIGUSR1, slow_death)
    print("ready", flush=True)
    while True:
        timeout = None
        if idle is not None and opened:
            timeout = max(0.0, min(opened.values()) + idle - time.monotonic())
        for key, _ in selector.select(timeout):
            if key.fileobj is listener:
                conn, _ = listener.accept()
                with open(where + ".count", "a") as count:
                    count.write(f"{time.time()}\n")
                if at_once:
                    conn.close()
                    continue
                if "--fork-holder" in options and os.fork() == 0:
                    listener.close()
                    time.sleep(60)
                    os._exit(0)
                if "--detach-after-first" in options:
                    time.sleep(0.3)  # the client has looked at its peer by now
                    if os.fork() > 0:
                        os._exit(0)
                opened[conn] = time.monotonic()
                selector.register(conn, selectors.EVENT_READ)
            else:
                try:
                    data = key.fileobj.recv(4096)
                except ConnectionResetError:  # the client gave up on us (a muted test host)
                    data = b""
                if not data:
                    selector.unregister(key.fileobj)
                    del opened[key.fileobj]
                    key.fileobj.close()
        if idle is not None:
            now = time.monotonic()
            for conn, since in list(opened.items()):
                if now - since >= idle:
                    selector.unregister(conn)
                    del opened[conn]
                    conn.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

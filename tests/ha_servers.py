"""Servers for tests/test_ha.py, run by ham (and killed, and restarted by it).

    ha_servers.py neutrino        channel 1; replies b"<pid> <message>" to every MsgSend
    ha_servers.py unix PATH       a stream socket at PATH; one line in, b"<pid> <line>" out;
                                  "hold PID" gets no answer while this server's pid is PID
"""

import os
import socket
import sys


def neutrino() -> None:
    from hamtools.neutrino import ChannelCreate, MsgReceive, MsgReply

    chid = ChannelCreate(0)
    while True:
        rcvid, msg, _ = MsgReceive(chid)
        if rcvid:
            MsgReply(rcvid, 0, b"%d %s" % (os.getpid(), msg))


def unix(path: str) -> None:
    if os.path.exists(path):
        os.unlink(path)  # the socket file of the incarnation that was killed
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
    while True:
        conn, _ = listener.accept()
        with conn, conn.makefile("rb") as lines:
            for line in lines:
                words = line.split()
                if words[:1] == [b"hold"] and int(words[1]) == os.getpid():
                    continue  # never answered: the client waits until this server dies
                conn.sendall(b"%d %s" % (os.getpid(), line))


if __name__ == "__main__":
    {"neutrino": neutrino, "unix": unix}[sys.argv[1]](*sys.argv[2:])

"""`pulsedemo`: the QNX system-pulse programs of seed 003, on hamtools.neutrino.

Each demo prints what the seed's C program prints, so the two can be read side by side.
"""

import errno
import os
import random
import signal
import sys
import threading
import time

from hamtools.core import cli
from hamtools.core.errors import AppletError
from hamtools.neutrino import (
    _NTO_CHF_COID_DISCONNECT,
    _NTO_CHF_DISCONNECT,
    _NTO_CHF_THREAD_DEATH,
    _NTO_CHF_UNBLOCK,
    _PULSE_CODE_COIDDEATH,
    _PULSE_CODE_DISCONNECT,
    _PULSE_CODE_UNBLOCK,
    EINTR,
    ND_LOCAL_NODE,
    ChannelCreate,
    ConnectAttach,
    ConnectDetach,
    MsgError,
    MsgReceive,
    MsgReceivePulse,
    MsgReply,
    MsgSend,
    strerror,
)

app = cli.make_app(
    "QNX system pulses on Linux: runnable versions of the seed's programs "
    "(_PULSE_CODE_UNBLOCK, _DISCONNECT, _THREADDEATH, _COIDDEATH)."
)


def say(text: str) -> None:
    print(text, flush=True)


def _failed(what: str, err: OSError) -> AppletError:
    return AppletError(f"{what}: {strerror(err.errno) if err.errno else err}")


@app.command("unblock-server")
def unblock_server(
    ignore_unblock: bool = cli.typer.Option(
        False, "--ignore-unblock",
        help="never MsgError the client: shows a Ctrl-C that cannot end a REPLY-blocked client"),
):
    """The seed's simple server: a channel with _NTO_CHF_UNBLOCK that receives messages, never
    replies, and lets a client go with MsgError(EINTR) when its UNBLOCK pulse arrives."""
    try:
        chid = ChannelCreate(_NTO_CHF_UNBLOCK)
    except OSError as err:
        raise _failed("ChannelCreate", err) from None
    say(f"Server is ready, pid = {os.getpid()}, chid = {chid}")
    while True:
        rcvid, msg, info = MsgReceive(chid)
        if rcvid > 0:
            say(f"Server: Received a message, rcvid is {rcvid}, do not reply")
            continue
        say(f"Server: Received a Pulse, pulse code is {msg.code}")
        if msg.code != _PULSE_CODE_UNBLOCK:
            continue
        if ignore_unblock:
            say(f"Server: client with rcvid {msg.value} want to unblock, ignored")
            continue
        say(f"Server: client with rcvid {msg.value} want to unblock, let go")
        try:
            MsgError(msg.value, EINTR)
        except OSError as err:  # it died meanwhile: nothing to let go
            say(f"Server: MsgError: {strerror(err.errno)}")


@app.command("unblock-client")
def unblock_client(
    pid: int = cli.typer.Argument(..., help="the server's pid"),
    chid: int = cli.typer.Argument(..., help="the server's chid"),
    interrupt_after: float = cli.typer.Option(
        0.0, "--interrupt-after", metavar="SECS",
        help="send ourselves SIGINT after SECS, as if Ctrl-C were pressed (0: wait for a real one)"),
):
    """Send a message to the server and stay REPLY-blocked; Ctrl-C (SIGINT) asks the server to
    let the client go, and only the server's MsgError(EINTR) ends the wait."""
    try:
        coid = ConnectAttach(ND_LOCAL_NODE, pid, chid, 0, 0)
    except OSError as err:
        raise _failed(f"ConnectAttach to pid {pid} chid {chid}", err) from None
    # Ctrl-C must raise KeyboardInterrupt even where SIGINT was inherited ignored (a
    # background job): that is the signal this demo is about.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if interrupt_after > 0:
        threading.Timer(interrupt_after, os.kill, (os.getpid(), signal.SIGINT)).start()
    say(f"Client: sending to pid {pid} chid {chid}, REPLY-blocked until the server answers "
        "(press Ctrl-C)")
    try:
        status, reply = MsgSend(coid, b"hello")
    except KeyboardInterrupt as interrupt:
        answer = interrupt.__context__
        if isinstance(answer, OSError) and answer.errno == errno.EINTR:
            say(f"Client: MsgSend returned: {strerror(EINTR)} (the server let us go)")
        elif isinstance(answer, OSError):
            say(f"Client: MsgSend returned: {strerror(answer.errno)} (the server is gone)")
        else:
            say("Client: the server replied; now the Ctrl-C takes effect")
        return 130
    except OSError as err:
        raise _failed("MsgSend", err) from None
    say(f"Client: MsgSend returned status {status}, reply {reply!r}")


@app.command("thread-pulse")
def thread_pulse(
    nthread: int = cli.typer.Argument(10, min=1, max=1000, help="threads to start"),
    max_sleep: float = cli.typer.Option(
        10.0, "--max-sleep", metavar="SECS", min=0.0,
        help="each thread sleeps a random time below this before it exits (seed: rand() % 10 s)"),
):
    """The seed's thread_pulse.c: one THREAD_DEATH channel gets one _PULSE_CODE_THREADDEATH per
    exiting thread; a second such channel fails with EBUSY."""
    try:
        chid = ChannelCreate(_NTO_CHF_THREAD_DEATH)
    except OSError as err:
        raise _failed("ChannelCreate", err) from None
    try:
        ChannelCreate(_NTO_CHF_THREAD_DEATH)
    except OSError as err:
        say(f"Create Second Channel returns: {strerror(err.errno)}")
    else:
        say("Create another channel succesed?")
        return 1
    say(f"Create threads from 2 to {nthread + 1} ... ")
    for _ in range(nthread):
        threading.Thread(target=time.sleep, args=(random.random() * max_sleep,), daemon=True).start()
    for _ in range(nthread):
        pulse = MsgReceivePulse(chid)
        say(f"Thread {pulse.value} dead")


@app.command("disconnect")
def disconnect():
    """A client process attaches twice to our _NTO_CHF_DISCONNECT channel and detaches both:
    only its last ConnectDetach brings _PULSE_CODE_DISCONNECT, whose scoid we then detach."""
    chid = ChannelCreate(_NTO_CHF_DISCONNECT)
    say(f"Server: pid {os.getpid()}, chid {chid} with _NTO_CHF_DISCONNECT")
    child = os.fork()
    if child == 0:
        os._exit(_disconnect_client(os.getppid(), chid))
    while True:
        rcvid, msg, info = MsgReceive(chid)
        if rcvid > 0:
            say(f"Server: message {msg.decode(errors='replace')!r} from pid {info.pid} "
                f"(scoid {info.scoid})")
            MsgReply(rcvid, 0)
        elif msg.code == _PULSE_CODE_DISCONNECT:
            say(f"Server: _PULSE_CODE_DISCONNECT, scoid {msg.scoid}: the client's last "
                "connection is gone")
            ConnectDetach(msg.scoid)
            break
    _, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status)


def _disconnect_client(server_pid: int, chid: int) -> int:
    first = ConnectAttach(ND_LOCAL_NODE, server_pid, chid, 0, 0)
    second = ConnectAttach(ND_LOCAL_NODE, server_pid, chid, 0, 0)
    say(f"Client: pid {os.getpid()} attached twice: coid {first} and coid {second}")
    MsgSend(first, b"hello on the first connection")
    ConnectDetach(first)
    say(f"Client: detached coid {first} (not the last: no pulse)")
    MsgSend(second, b"still here on the second connection")
    say(f"Client: detaching coid {second}, the last one")
    ConnectDetach(second)
    return 0


@app.command("coiddeath")
def coiddeath(
    pid: int = cli.typer.Option(0, "--pid", help="watch this server instead of starting one"),
    chid: int = cli.typer.Option(1, "--chid", help="the watched server's chid (with --pid)"),
):
    """Connect to a server and wait on a _NTO_CHF_COID_DISCONNECT channel, using no CPU, until
    _PULSE_CODE_COIDDEATH says the server died: how QNX's HAM and sockmon watch a server.
    Without --pid it starts a server of its own and has it crash."""
    watch_chid = ChannelCreate(_NTO_CHF_COID_DISCONNECT)
    child = 0
    if not pid:
        pid, chid, child = _start_doomed_server()
    try:
        coid = ConnectAttach(ND_LOCAL_NODE, pid, chid, 0, 0)
    except OSError as err:
        raise _failed(f"ConnectAttach to pid {pid} chid {chid}", err) from None
    say(f"Client: connected to pid {pid} chid {chid} as coid {coid}; waiting for it to die")
    if child:
        MsgSend(coid, b"crash")
    pulse = MsgReceivePulse(watch_chid)
    if pulse.code == _PULSE_CODE_COIDDEATH:
        say(f"Client: _PULSE_CODE_COIDDEATH for coid {pulse.value}: the server died")
    ConnectDetach(coid)
    if child:
        _, status = os.waitpid(child, 0)
        say(f"Client: the server ended with {_describe_status(status)}")


def _start_doomed_server() -> tuple[int, int, int]:
    ready_r, ready_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(ready_r)
        server_chid = ChannelCreate(0)
        os.write(ready_w, str(server_chid).encode())
        rcvid, _, _ = MsgReceive(server_chid)
        MsgReply(rcvid, 0)
        say(f"Server: pid {os.getpid()} crashing (SIGSEGV)")
        os.kill(os.getpid(), signal.SIGSEGV)
        os._exit(1)
    os.close(ready_w)
    server_chid = int(os.read(ready_r, 32))
    os.close(ready_r)
    return child, server_chid, child


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.WEXITSTATUS(status)}"


# The seed 002 client's pulse codes (_PULSE_CODE_MINAVAIL + n) and signal.
PCODEINETDDEATH, PCODEINETDDETACH, PCODENFSDELAYED, PCODEINETDRESTART1, PCODEINETDRESTART2 = 1, 2, 3, 4, 5
LISTEN_MESSAGES = {
    PCODEINETDDEATH: "Inetd Death Pulse",
    PCODENFSDELAYED: "Fs-nfs2 died: this is the possibly delayed pulse",
    PCODEINETDDETACH: "Inetd detached, so quitting",
    PCODEINETDRESTART1: "Inetd Restart Pulse: Immediate",
    PCODEINETDRESTART2: "Inetd Restart Pulse: Delayed",
}


@app.command("listen")
def listen(
    inetd: str = cli.typer.Option("inetd", help="the entity watched by pulses (needs its 'death' condition)"),
    nfs: str = cli.typer.Option("Fs-nfs2", help="the entity watched by a signal (needs its 'Death' condition)"),
    delay: int = cli.typer.Option(6532, min=1, metavar="MS", help="the waitfor between the two restart pulses"),
):
    """The seed 002 client: HAM notify pulses on inetd's death, detach and restart (immediate and
    delayed), and a SIGRTMIN+1 with value 18 on Fs-nfs2's death, printed as they arrive.
    Pulses from anyone but ham (root or ham's uid) are ignored and said so on stderr: a
    channel's abstract name has no permissions, so any local user can send to it."""
    from hamtools import ham as h
    from hamtools.core.sigvalue import SignalReceiver

    mysig = signal.SIGRTMIN + 1
    receiver = SignalReceiver([mysig])  # blocked before any thread starts: they inherit it
    chid = ChannelCreate(0)
    pid, value, fsnfs_value = os.getpid(), 13, 18
    rearm = h.HREARMAFTERRESTART
    try:
        h.ham_connect(0)
        chdl = h.ham_condition_handle(ND_LOCAL_NODE, inetd, "death", 0)
        h.ham_action_notify_pulse(chdl, "notifypulsedeath", ND_LOCAL_NODE, pid, chid, PCODEINETDDEATH, value, rearm)
        ehdl = h.ham_entity_handle(ND_LOCAL_NODE, inetd, 0)
        chdl = h.ham_condition(ehdl, h.CONDDETACH, "detach", rearm)
        h.ham_action_notify_pulse(chdl, "notifypulsedetach", ND_LOCAL_NODE, pid, chid, PCODEINETDDETACH, value, rearm)
        ehdl = h.ham_entity_handle(ND_LOCAL_NODE, nfs, 0)
        chdl = h.ham_condition(ehdl, h.CONDDEATH, "DeathSep", h.HCONDINDEPENDENT | rearm)
        h.ham_action_notify_signal(chdl, "notifysignaldeath", ND_LOCAL_NODE, pid, mysig, 0, fsnfs_value, rearm)
        chdl = h.ham_condition_handle(ND_LOCAL_NODE, nfs, "Death", 0)
        h.ham_action_notify_pulse(chdl, "delayednfsdeathpulse", ND_LOCAL_NODE, pid, chid, PCODENFSDELAYED, value, rearm)
        ehdl = h.ham_entity_handle(ND_LOCAL_NODE, inetd, 0)
        chdl = h.ham_condition(ehdl, h.CONDRESTART, "restart", rearm | h.HCONDINDEPENDENT)
        h.ham_action_notify_pulse(chdl, "notifyrestart_imm", ND_LOCAL_NODE, pid, chid, PCODEINETDRESTART1, value, rearm)
        h.ham_action_waitfor(chdl, "delay", None, delay, rearm)
        h.ham_action_notify_pulse(chdl, "notifyrestart_delayed", ND_LOCAL_NODE, pid, chid, PCODEINETDRESTART2, value, rearm)
        trusted = {0, os.stat(f"/proc/{h.ham_status()['ham_pid']}").st_uid}
    except OSError as err:
        raise AppletError(f"registering with ham: {err.strerror}", 3 if err.errno in (errno.EBADF, errno.ENOENT) else 1) from None
    say(f"Listening: pid {pid}, chid {chid}")

    def signals():
        while True:
            got = receiver.read()
            say(f"Received signal {got.signo}, with code = {got.code}, value {got.value}")
            if got.value == fsnfs_value:
                say("FS-nfs2 died, this is the notify signal")

    threading.Thread(target=signals, daemon=True).start()
    while True:
        pulse = MsgReceivePulse(chid)
        if pulse.uid not in trusted:
            print(f"pulsedemo: listen: ignored pulse code {pulse.code} from pid {pulse.pid} "
                  f"(uid {pulse.uid}): not ham", file=sys.stderr, flush=True)
            continue
        say(LISTEN_MESSAGES.get(pulse.code, f"Pulse code {pulse.code}, value {pulse.value}"))
        if pulse.code == PCODEINETDDETACH:
            break
    # The nfs notifications stay registered: once we are gone they fail and ham prunes them.
    h.ham_disconnect(0)


def main(argv: list[str]) -> int:
    return cli.run(app, "pulsedemo", argv)

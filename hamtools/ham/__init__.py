"""libham for Python: QNX's HAM API with QNX's names, argument order and constants.

    from hamtools.ham import *
    ham_connect(0)
    ehdl = ham_attach("inetd", ND_LOCAL_NODE, -1, "/usr/sbin/inetd -d", 0)
    chdl = ham_condition(ehdl, CONDDEATH, "death", HREARMAFTERRESTART)
    ahdl = ham_action_restart(chdl, "restart", "/usr/sbin/inetd -d", HREARMAFTERRESTART)
    ham_disconnect(0)

Where C returns NULL or -1 and sets errno, these raise OSError with QNX's errno (EBADF: no
ham; EEXIST, EINVAL, ENOENT, ENAMETOOLONG as documented). Handles are name-based, as in QNX:
one may go stale, and using it then raises ENOENT.

Differences, by design: a call that QNX only allows after ham_connect() connects implicitly
when there is no connection; only ND_LOCAL_NODE (0) and a NULL node name are accepted
(others give EINVAL); a process may self-attach several entities (each keeps its own
connection; closing it without ham_detach_self is the entity's death); heartbeats are
sent when ham_heartbeat() is called, not quantised to period boundaries.
"""

import errno
import os

from hamtools.ham.client import Connection
from hamtools.core.hamconsts import *  # noqa: F401,F403  (QNX's names, QNX's values)
from hamtools.core.hamconsts import ND_LOCAL_NODE, VERBOSE_GET
from hamtools.core.hamproto import HBEAT_CODE

_shared: Connection | None = None
_refs = 0
_self: dict[str, Connection] = {}  # self-attached entity name -> its own connection


class Handle:
    """An entity, condition or action handle: the object's path, checked at each use."""

    __slots__ = ("path", "self_attached")

    def __init__(self, path: str, self_attached: bool = False):
        self.path = path
        self.self_attached = self_attached

    def __repr__(self) -> str:
        return f"<ham handle {self.path}>"

    def child(self, name: str) -> str:
        return f"{self.path}/{name}"


def _err(err: int, message: str) -> OSError:
    return OSError(err, message)


def _node(nd) -> None:
    if nd not in (ND_LOCAL_NODE, None):
        raise _err(errno.EINVAL, f"node {nd!r}: only the local node is supported")


def _call(op: str, args: dict | None = None):
    """A request on the shared connection, or on a temporary one (implicit connect)."""
    if _shared is not None:
        if _shared.pid != os.getpid():
            raise _err(errno.EINVAL, "the HAM connection belongs to the parent process: "
                                     "call ham_connect() again after fork")
        return _shared.request(op, args)
    conn = Connection()
    try:
        return conn.request(op, args)
    finally:
        conn.close()


def _path(handle: Handle) -> str:
    if not isinstance(handle, Handle):
        raise _err(errno.EINVAL, f"not a HAM handle: {handle!r}")
    return handle.path


# ---- connections ------------------------------------------------------------------------

def ham_connect(flags: int = 0) -> None:
    global _shared, _refs
    if _shared is not None and _shared.pid != os.getpid():
        _shared, _refs = None, 0  # inherited across fork: not ours
    if _shared is None:
        _shared = Connection()
    _refs += 1


def ham_connect_nd(nd: int, flags: int = 0) -> None:
    _node(nd)
    ham_connect(flags)


def ham_connect_node(nodename: str | None, flags: int = 0) -> None:
    _node(nodename)
    ham_connect(flags)


def ham_disconnect(flags: int = 0) -> None:
    global _shared, _refs
    if _shared is None or _shared.pid != os.getpid():
        raise _err(errno.EINVAL, "not connected to HAM")
    _refs -= 1
    if _refs == 0:
        _shared.close()
        _shared = None


def ham_disconnect_nd(nd: int, flags: int = 0) -> None:
    _node(nd)
    ham_disconnect(flags)


def ham_disconnect_node(nodename: str | None, flags: int = 0) -> None:
    _node(nodename)
    ham_disconnect(flags)


# ---- entities ---------------------------------------------------------------------------

def ham_attach(ename: str, nd: int, pid: int, line: str | None, flags: int) -> Handle:
    """Watch process pid (> 0), or start `line` and watch it (pid <= 0)."""
    _node(nd)
    if pid <= 0 and not line:
        raise _err(errno.EINVAL, "pid <= 0 needs a command line")
    _call("attach", {"name": ename, "pid": pid, "line": line or "", "flags": flags})
    return Handle(ename)


def ham_attach_node(ename: str, nodename: str | None, pid: int, line: str | None, flags: int) -> Handle:
    _node(nodename)
    return ham_attach(ename, ND_LOCAL_NODE, pid, line, flags)


def ham_attach_self(ename: str, hp: int, hpdl: int, hpdh: int, flags: int) -> Handle:
    """Self-attach: this process is entity ename until ham_detach_self, or its death.
    hp is the heartbeat period in nanoseconds (0: none). The attachment survives a restart
    of ham (a takeover by its guardian, a re-exec): a thread of this library attaches again
    by itself (hamtools.ham.keeper)."""
    if ename in _self:
        raise _err(errno.EEXIST, f"already self-attached as {ename!r}")
    arguments = {"name": ename, "hp": hp, "hpdl": hpdl, "hpdh": hpdh, "flags": flags}
    conn = Connection(prefer_control=False)
    try:
        conn.request("attach_self", arguments)
    except OSError:
        conn.close()
        raise
    _self[ename] = conn
    _keeper_of_this_process().attached(ename, arguments)
    return Handle(ename, self_attached=True)


_keeper = None


def _keeper_of_this_process():
    global _keeper
    if _keeper is None or _keeper.pid != os.getpid():  # a thread does not survive fork
        from hamtools.ham.keeper import Keeper

        _keeper = Keeper(_self)
    return _keeper


def ham_detach(ehdl: Handle, flags: int = 0) -> None:
    if getattr(ehdl, "self_attached", False):
        raise _err(errno.EINVAL, "a self-attached entity detaches with ham_detach_self")
    _call("detach", {"name": _path(ehdl)})


def ham_detach_self(ehdl: Handle, flags: int = 0) -> None:
    name = _path(ehdl)
    if name not in _self:
        raise _err(errno.EINVAL, f"{ehdl.path!r} is not self-attached by this process")
    arguments = _keeper.arguments.get(name) if _keeper is not None else None
    if _keeper is not None:
        _keeper.detached(name)  # from now on it leaves this entity alone
    conn = _self[name]
    try:
        conn.request("detach_self", {"name": name})
    except OSError as err:
        if err.errno != errno.EBADF or arguments is None:
            raise
        _detach_again(arguments)  # ham was restarted under us: detach from the new one
    finally:
        _self.pop(name, None)
        conn.close()


def _detach_again(arguments: dict) -> None:
    conn = Connection(prefer_control=False)
    try:
        conn.request("attach_self", arguments)  # the same process: the same entity again
        conn.request("detach_self", {"name": arguments["name"]})
    finally:
        conn.close()


def ham_detach_name(nd: int, ename: str, flags: int = 0) -> None:
    _node(nd)
    _call("detach", {"name": ename})


def ham_detach_name_node(nodename: str | None, ename: str, flags: int = 0) -> None:
    _node(nodename)
    _call("detach", {"name": ename})


def ham_entity(ename: str, nd: int, flags: int) -> Handle:
    """A placeholder: conditions and actions may be added before the process attaches."""
    _node(nd)
    _call("entity", {"name": ename, "flags": flags})
    return Handle(ename)


def ham_entity_remove(ehdl: Handle, flags: int = 0) -> None:
    """hamtools extension (SPEC §3's removal, for entities): take the entity out of
    monitoring. A placeholder goes; an entity with a process is detached as by ham_detach
    (CONDDETACH fires, the process runs on). EINVAL for the global entity and for a service a
    configuration file defines (remove it there and reload)."""
    _call("remove", {"path": _path(ehdl)})


def ham_entity_node(ename: str, nodename: str | None, flags: int) -> Handle:
    _node(nodename)
    return ham_entity(ename, ND_LOCAL_NODE, flags)


def ham_heartbeat() -> None:
    """Beat for this process's self-attached entities. Always succeeds (QNX)."""
    for conn in list(_self.values()):  # the keeper thread may swap one meanwhile
        try:
            conn.pulse(HBEAT_CODE)
        except OSError:
            pass


def ham_entity_control(ehdl: Handle, command: int, flags: int) -> int:
    return _call("control", {"path": _path(ehdl), "command": command, "flags": flags})["flags"]


def ham_entity_condition_state(ehdl: Handle, tostate: int, flags: int = 0) -> None:
    _call("state", {"name": _path(ehdl), "state": tostate})


def ham_entity_condition_raise(ehdl: Handle, rtype: int, rclass: int, rseverity: int,
                               flags: int = 0) -> None:
    _call("raise", {"name": _path(ehdl), "rtype": rtype, "rclass": rclass, "rseverity": rseverity})


# ---- handles ----------------------------------------------------------------------------

def _handle(path: str) -> Handle:
    _call("handle", {"path": path})
    return Handle(path)


def ham_entity_handle(nd: int, ename: str | None, flags: int = 0) -> Handle:
    """ename None: the global entity."""
    _node(nd)
    return _handle(ename if ename is not None else ".__global")


def ham_entity_handle_node(nodename: str | None, ename: str | None, flags: int = 0) -> Handle:
    _node(nodename)
    return ham_entity_handle(ND_LOCAL_NODE, ename, flags)


def ham_condition_handle(nd: int, ename: str | None, cname: str, flags: int = 0) -> Handle:
    _node(nd)
    return _handle(f"{ename if ename is not None else '.__global'}/{cname}")


def ham_condition_handle_node(nodename, ename, cname, flags: int = 0) -> Handle:
    _node(nodename)
    return ham_condition_handle(ND_LOCAL_NODE, ename, cname, flags)


def ham_action_handle(nd: int, ename: str | None, cname: str, aname: str, flags: int = 0) -> Handle:
    _node(nd)
    return _handle(f"{ename if ename is not None else '.__global'}/{cname}/{aname}")


def ham_action_handle_node(nodename, ename, cname, aname, flags: int = 0) -> Handle:
    _node(nodename)
    return ham_action_handle(ND_LOCAL_NODE, ename, cname, aname, flags)


def _free(handle: Handle) -> None:
    _path(handle)  # client storage only: the object in ham stays


ham_entity_handle_free = ham_condition_handle_free = ham_action_handle_free = _free


# ---- conditions -------------------------------------------------------------------------

def _condition(ehdl: Handle, cname: str, args: dict) -> Handle:
    path = _path(ehdl) + "/" + str(cname)
    _call("condition", {"path": path, **args})
    return Handle(path)


def ham_condition(ehdl: Handle, type: int, cname: str, flags: int) -> Handle:
    if type in (CONDSTATE, CONDRAISE):  # noqa: F405
        raise _err(errno.EINVAL, "CONDSTATE/CONDRAISE take ham_condition_state/_raise")
    return _condition(ehdl, cname, {"type": type, "flags": flags})


def ham_condition_state(ehdl: Handle, cname: str, fromstate: int, tostate: int, flags: int) -> Handle:
    return _condition(ehdl, cname, {"type": CONDSTATE, "flags": flags,  # noqa: F405
                                    "from": fromstate, "to": tostate})


def ham_condition_raise(ehdl: Handle, cname: str, rtype: int, rclass: int, rseverity: int,
                        flags: int) -> Handle:
    return _condition(ehdl, cname, {"type": CONDRAISE, "flags": flags, "rtype": rtype,  # noqa: F405
                                    "rclass": rclass, "rseverity": rseverity})


def ham_condition_control(chdl: Handle, command: int, flags: int) -> int:
    return _call("control", {"path": _path(chdl), "command": command, "flags": flags})["flags"]


def ham_condition_remove(chdl: Handle, flags: int = 0) -> None:
    _call("remove", {"path": _path(chdl)})


# ---- actions ----------------------------------------------------------------------------

def _action(chdl: Handle, aname: str, kind: str, params: dict, flags: int) -> Handle:
    path = _path(chdl) + "/" + str(aname)
    _call("action", {"path": path, "kind": kind, "params": params, "flags": flags})
    return Handle(path)


def ham_action_restart(chdl: Handle, aname: str, path: str, flags: int) -> Handle:
    return _action(chdl, aname, "restart", {"line": path}, flags)


def ham_action_execute(chdl: Handle, aname: str, path: str, flags: int, timeout: float = 60) -> Handle:
    """timeout (seconds, a hamtools extension): the command must exit 0 within it."""
    return _action(chdl, aname, "execute", {"line": path, "timeout": timeout}, flags)


def ham_action_waitfor(chdl: Handle, aname: str, path: str | None, delay: int, flags: int) -> Handle:
    return _action(chdl, aname, "waitfor", {"path": path, "delay": delay}, flags)


def ham_action_notify_pulse(chdl: Handle, aname: str, nd: int, topid: int, chid: int,
                            pulsecode: int, value: int, flags: int) -> Handle:
    _node(nd)
    return _action(chdl, aname, "notify_pulse",
                   {"pid": topid, "chid": chid, "code": pulsecode, "value": value}, flags)


def ham_action_notify_signal(chdl: Handle, aname: str, nd: int, topid: int, signum: int,
                             code: int, value: int, flags: int) -> Handle:
    _node(nd)
    return _action(chdl, aname, "notify_signal",
                   {"pid": topid, "signum": signum, "code": code, "value": value}, flags)


def ham_action_notify_pulse_node(chdl, aname, nodename, topid, chid, pulsecode, value, flags):
    _node(nodename)
    return ham_action_notify_pulse(chdl, aname, ND_LOCAL_NODE, topid, chid, pulsecode, value, flags)


def ham_action_notify_signal_node(chdl, aname, nodename, topid, signum, code, value, flags):
    _node(nodename)
    return ham_action_notify_signal(chdl, aname, ND_LOCAL_NODE, topid, signum, code, value, flags)


def ham_action_heartbeat_healthy(chdl: Handle, aname: str, flags: int) -> Handle:
    return _action(chdl, aname, "heartbeat_healthy", {}, flags)


def ham_action_log(chdl: Handle, aname: str, msg: str, attachprefix: int, verbosity: int,
                   flags: int) -> Handle:
    return _action(chdl, aname, "log",
                   {"message": msg, "prefix": int(bool(attachprefix)), "verbosity": verbosity}, flags)


def ham_action_remove(ahdl: Handle, flags: int = 0) -> None:
    _call("remove", {"path": _path(ahdl)})


def ham_action_control(ahdl: Handle, command: int, flags: int) -> int:
    return _call("control", {"path": _path(ahdl), "command": command, "flags": flags})["flags"]


# ---- action-fail lists ------------------------------------------------------------------

def _fail(ahdl: Handle, aname: str, kind: str, params: dict) -> None:
    _call("fail", {"path": f"{_path(ahdl)}/{aname}", "kind": kind, "params": params})


def ham_action_fail_execute(ahdl: Handle, aname: str, path: str, flags: int, timeout: float = 60) -> None:
    _fail(ahdl, aname, "execute", {"line": path, "timeout": timeout})


def ham_action_fail_waitfor(ahdl: Handle, aname: str, path: str | None, delay: int, flags: int) -> None:
    _fail(ahdl, aname, "waitfor", {"path": path, "delay": delay})


def ham_action_fail_notify_pulse(ahdl: Handle, aname: str, nd: int, topid: int, chid: int,
                                 pulsecode: int, value: int, flags: int) -> None:
    _node(nd)
    _fail(ahdl, aname, "notify_pulse", {"pid": topid, "chid": chid, "code": pulsecode, "value": value})


def ham_action_fail_notify_signal(ahdl: Handle, aname: str, nd: int, topid: int, signum: int,
                                  code: int, value: int, flags: int) -> None:
    _node(nd)
    _fail(ahdl, aname, "notify_signal", {"pid": topid, "signum": signum, "code": code, "value": value})


def ham_action_fail_notify_pulse_node(ahdl, aname, nodename, topid, chid, pulsecode, value, flags):
    _node(nodename)
    ham_action_fail_notify_pulse(ahdl, aname, ND_LOCAL_NODE, topid, chid, pulsecode, value, flags)


def ham_action_fail_notify_signal_node(ahdl, aname, nodename, topid, signum, code, value, flags):
    _node(nodename)
    ham_action_fail_notify_signal(ahdl, aname, ND_LOCAL_NODE, topid, signum, code, value, flags)


def ham_action_fail_log(ahdl: Handle, aname: str, msg: str, attachprefix: int, verbosity: int,
                        flags: int) -> None:
    _fail(ahdl, aname, "log", {"message": msg, "prefix": int(bool(attachprefix)), "verbosity": verbosity})


def ham_action_fail_remove(ahdl: Handle, aname: str, flags: int = 0) -> None:
    _call("remove", {"path": f"{_path(ahdl)}/{aname}"})


# ---- ham itself -------------------------------------------------------------------------

def ham_stop(*, stop_entities: bool = False) -> None:
    """Stop ham. stop_entities (a hamtools extension) stops the monitored processes too."""
    _call("stop", {"stop_entities": stop_entities})


def ham_stop_nd(nd: int) -> None:
    _node(nd)
    ham_stop()


def ham_stop_node(nodename: str | None) -> None:
    _node(nodename)
    ham_stop()


def ham_verbose(nodename: str | None, op: int, value: int) -> int:
    """VERBOSE_GET returns the verbosity; the set operations return 0."""
    _node(nodename)
    level = _call("verbose", {"op": op, "value": value})["verbosity"]
    return level if op == VERBOSE_GET else 0


def ham_status() -> dict:
    """hamtools extension: ham's whole state, as `hamctl status --json` prints it."""
    return _call("status")


def ham_service_control(ename: str, command: str) -> dict:
    """hamtools extension: "start", "stop" or "restart" one entity that ham started by command
    (a service, or ham_attach with a line). Returns {"name", "pid", "run"}."""
    return _call("run", {"name": ename, "command": command})


def ham_reload() -> dict:
    """hamtools extension: apply ham's configuration files again (as SIGHUP does); returns the
    names added, removed, changed and unchanged."""
    return _call("reload")


def ham_reexec(zipapp: str | None = None) -> dict:
    """hamtools extension: replace the running ham with the code of zipapp (an absolute path;
    default: the file ham runs from, replaced since) in place — same pid, every entity kept.
    ham tries the new code first and stays as it is if it cannot run; the re-exec itself
    happens once this call has returned ({"pid": ham's pid}): `ham_status()["started"]`
    changes when it is done, and "reexec_failure" says why when it was refused."""
    return _call("reexec", {"zipapp": zipapp})


def ham_service_set(ename: str, **settings) -> dict:
    """hamtools extension: set restart policy and service attributes of an entity ham started
    (keys and values as in a TOML [service.NAME] table: restart="on-failure",
    max_restarts=10, backoff_max="5s", kill_signal="SIGABRT", uid="www", cwd="/srv", ...).
    They apply from its next death or start. Returns the whole validated spec."""
    return _call("service_set", {"name": ename, "settings": settings})


def ham_group_set(gname: str, **settings) -> dict:
    """hamtools extension: set a service group's policy (keys and values as in a TOML
    [group.NAME] table: strategy="one_for_all", window="30s"). They apply from the next
    failure of a member. Returns the group's settings."""
    return _call("group_set", {"name": gname, "settings": settings})

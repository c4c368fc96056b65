"""Config files onto the one service spec: seed 001's startup file and TOML, every variable and
key, every kind of bad line with its exact `FILE:LINE: message`, reload's diff, the demo board."""

import grp
import os
import pwd
import signal
import subprocess
import time
from pathlib import Path

import pytest

from hamtools.core import hamconsts as q
from hamtools.hamd import config, service
from hamtools.hamd.service import ConfigError

ROOT = Path(__file__).resolve().parent.parent
NOBODY = pwd.getpwnam("nobody")


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def load_one(tmp_path, name: str, text: str) -> dict:
    specs, _groups, _trees = config.load([write(tmp_path, name, text)])
    assert len(specs) == 1
    return specs[0]


def error(tmp_path, name: str, text: str) -> str:
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigError) as caught:
        config.load([path])
    return str(caught.value).replace(path, name)


# ---- the startup file: every variable --------------------------------------------------

@pytest.mark.parametrize("line, key, value", [
    ("NAME=web /bin/sleep 1", "name", "web"),
    ("/usr/bin/sleep 1", "name", "sleep"),  # default: the program's basename
    ("HEARTBEAT=1.5 /bin/true", "heartbeat", 1.5),
    ("HEARTBEAT=500ms /bin/true", "heartbeat", 0.5),
    ("HEARTBEAT=2s /bin/true", "heartbeat", 2.0),
    ("HEARTBEAT=1m /bin/true", "heartbeat", 60.0),
    ("HEARTBEAT=2 MISSED_LOW=2 MISSED_HIGH=5 /bin/true", "missed_low", 2),
    ("HEARTBEAT=2 MISSED_LOW=2 MISSED_HIGH=5 /bin/true", "missed_high", 5),
    ("RESTART=always /bin/true", "restart", "always"),
    ("RESTART=on-failure /bin/true", "restart", "on-failure"),
    ("RESTART=never /bin/true", "restart", "never"),
    ("MAX_RESTARTS=7 /bin/true", "max_restarts", 7),
    ("RESTART_WINDOW=30 /bin/true", "restart_window", 30.0),
    ("GROUP=pumps /bin/true", "group", "pumps"),
    ("SAFE_AFTER=10 /bin/true", "safe_after", 10.0),
    ("SAFE_ARG=--safe /bin/true", "safe_arg", "--safe"),
    ("KILL_SIGNAL=SIGSEGV /bin/true", "kill_signal", signal.SIGSEGV),
    ("KILL_SIGNAL=abrt /bin/true", "kill_signal", signal.SIGABRT),
    ("KILL_SIGNAL=9 /bin/true", "kill_signal", signal.SIGKILL),
    ("GRACE=2.5 /bin/true", "grace", 2.5),
    ("USER=nobody /bin/true", "uid", NOBODY.pw_uid),
    ("USER=nobody /bin/true", "gid", NOBODY.pw_gid),  # the user's primary group
    ("USER=0 /bin/true", "uid", 0),
    ("CWD=/tmp /bin/true", "cwd", "/tmp"),
    ("NAME=c AFTER=a,b /bin/true\nNAME=a /bin/true\nNAME=b /bin/true", "after", ["a", "b"]),
    ("FOO=bar LANG=C /bin/true", "env", {"FOO": "bar", "LANG": "C"}),
    ('MOTD="hello world" /bin/true', "env", {"MOTD": "hello world"}),
    ("/bin/sh -c 'sleep 2; kill -SEGV $$' \"two words\"", "argv",
     ["/bin/sh", "-c", "sleep 2; kill -SEGV $$", "two words"]),
    ("/bin/echo a=b", "argv", ["/bin/echo", "a=b"]),  # after the program, a=b is an argument
    ("/bin/echo \\\n   one \\\n   two", "argv", ["/bin/echo", "one", "two"]),
])
def test_startup_variable(tmp_path, line, key, value):
    specs, _, _ = config.load([write(tmp_path, "board.conf", line + "\n")])
    assert specs[0][key] == value
    assert type(specs[0][key]) is type(value) or isinstance(value, signal.Signals)


def test_startup_file_defaults_and_types(tmp_path):
    spec = load_one(tmp_path, "board.conf", "/bin/sleep 5\n")
    assert spec == {
        "name": "sleep", "argv": ["/bin/sleep", "5"], "env": {}, "uid": None, "gid": None,
        "cwd": None, "umask": None, "rlimits": {}, "nice": None, "sched": None, "cpus": None,
        "cgroup": None, "stdout": "inherit", "stderr": "inherit", "log_max_bytes": 1048576,
        "log_keep": 3, "stop_signal": 15, "stop_timeout": 10.0, "kill_signal": 6, "grace": 5.0,
        "restart": "always", "max_restarts": 5, "restart_window": 60.0, "backoff_initial": 0.1,
        "backoff_max": 30.0, "backoff_factor": 2.0, "reset_after": 60.0, "on_limit": "log",
        "on_limit_command": None, "group": None, "safe_after": 60.0, "safe_arg": None,
        "heartbeat": 0.0, "missed_low": 1, "missed_high": 3, "after": [], "ready": "none",
        "conditions": [], "source": str(tmp_path / "board.conf") + ":1",
    }
    for key in ("stop_timeout", "grace", "restart_window", "heartbeat", "safe_after"):
        assert type(spec[key]) is float
    assert type(spec["stop_signal"]) is int  # not signal.Signals: specs go to JSON


def test_startup_comments_blank_lines_and_line_numbers(tmp_path):
    path = write(tmp_path, "board.conf", "# the board\n\n   # indented comment\nNAME=a /bin/true\n"
                 "NAME=b \\\n  /bin/true\n\nNAME=c /bin/true")
    specs, groups, _ = config.load([path])
    assert [(s["name"], s["source"]) for s in specs] == [
        ("a", f"{path}:4"), ("b", f"{path}:5"), ("c", f"{path}:8")]
    assert groups == {}


def test_startup_group_gets_default_settings(tmp_path):
    path = write(tmp_path, "board.conf", "NAME=a GROUP=g /bin/true\nNAME=b GROUP=g /bin/true\n")
    _specs, groups, _ = config.load([path])
    assert groups == {"g": {"strategy": "cascade", "window": 60.0, "source": f"{path}:1"}}


def test_relative_program_is_relative_to_the_config_file(tmp_path):
    spec = load_one(tmp_path, "board.conf", "NAME=w ./bin/worker --fast\n")
    assert spec["argv"] == [str(tmp_path / "bin" / "worker"), "--fast"]
    spec = load_one(tmp_path, "b.toml", '[service.w]\nargv = ["../worker"]\n')
    assert spec["argv"] == [str(tmp_path.parent / "worker")]
    assert load_one(tmp_path, "c.conf", "sleep 1\n")["argv"] == ["sleep", "1"]  # PATH lookup


@pytest.mark.parametrize("text, message", [
    ("/bin/sh -c 'sleep 2\n", "board.conf:1: bad quoting: no closing quotation"),
    ("# fine\nNAME=x FOO=1\n", "board.conf:2: no program after the variables"),
    ("\nNAME=x /bin/echo 'a \\\n  b\n", "board.conf:2: bad quoting: no closing quotation"),
    ("KILL_SIGNAL=SIGFOO /bin/true\n", "board.conf:1: KILL_SIGNAL: unknown signal 'SIGFOO'"),
    ("KILL_SIGNAL=99 /bin/true\n", "board.conf:1: KILL_SIGNAL: unknown signal '99'"),
    ("HEARTBEAT=soon /bin/true\n",
     "board.conf:1: HEARTBEAT: bad duration 'soon' (seconds, or 500ms, 2s, 1m, 1h)"),
    ("RESTART_WINDOW=5x /bin/true\n",
     "board.conf:1: RESTART_WINDOW: bad duration '5x' (seconds, or 500ms, 2s, 1m, 1h)"),
    ("HEARTBEAT=nan /bin/true\n",
     "board.conf:1: HEARTBEAT: bad duration 'nan' (seconds, or 500ms, 2s, 1m, 1h)"),
    ("USER=no_such_user_here /bin/true\n", "board.conf:1: USER: unknown user 'no_such_user_here'"),
    ("MAX_RESTARTS=-1 /bin/true\n", "board.conf:1: MAX_RESTARTS: must not be negative (got -1)"),
    ("MAX_RESTARTS=many /bin/true\n", "board.conf:1: MAX_RESTARTS: must be an integer, not 'many'"),
    ("GRACE=-2 /bin/true\n", "board.conf:1: GRACE: must not be negative (got '-2')"),
    ("SAFE_AFTER=-1s /bin/true\n", "board.conf:1: SAFE_AFTER: must not be negative (got '-1s')"),
    ("RESTART=sometimes /bin/true\n",
     "board.conf:1: RESTART: must be always, on-failure, never, not 'sometimes'"),
    ("MISSED_LOW=0 /bin/true\n", "board.conf:1: MISSED_LOW: must be at least 1"),
    ("MISSED_LOW=4 MISSED_HIGH=2 /bin/true\n",
     "board.conf:1: MISSED_LOW (4) is above MISSED_HIGH (2)"),
    ("RESTART_WINDOW=0 /bin/true\n", "board.conf:1: RESTART_WINDOW: must be positive"),
    ("CWD=tmp /bin/true\n", "board.conf:1: CWD: must be an absolute path, not 'tmp'"),
    ("NAME=a/b /bin/true\n", "board.conf:1: NAME: bad name 'a/b' (no '/', under 256 bytes)"),
    ("NAME= /bin/true\n", "board.conf:1: NAME: bad name '' (no '/', under 256 bytes)"),
    ("GROUP=a/b /bin/true\n", "board.conf:1: GROUP: bad name 'a/b' (no '/', under 256 bytes)"),
    ("NAME=a NAME=b /bin/true\n", "board.conf:1: NAME is set twice"),
    ("FOO=1 FOO=2 /bin/true\n", "board.conf:1: FOO is set twice"),
    ("NAME=x /bin/true\n\nNAME=x /bin/false\n",
     "board.conf:3: service 'x' is defined twice (first at board.conf:1)"),
    ("/bin/sleep 1\n/usr/bin/sleep 2\n",
     "board.conf:2: service 'sleep' is defined twice (first at board.conf:1)"),
    ("NAME=a AFTER=nope /bin/true\n", "board.conf:1: AFTER: unknown service 'nope'"),
    ("NAME=a AFTER=a /bin/true\n", "board.conf:1: AFTER: 'a' cannot start after itself"),
    ("NAME=z /bin/true\nNAME=a AFTER=b /bin/true\nNAME=b AFTER=c /bin/true\n"
     "NAME=c AFTER=z,a /bin/true\n", "board.conf:2: AFTER: start-order cycle a -> b -> c -> a"),
    ("NAME=a AFTER=,b /bin/true\nNAME=b /bin/true\n",
     "board.conf:1: AFTER: bad name '' (no '/', under 256 bytes)"),
    ("USER=4294000000 /bin/true\n",
     "board.conf:1: USER: uid 4294000000 has no passwd entry: set gid too"),
])
def test_startup_bad_line(tmp_path, text, message):
    assert error(tmp_path, "board.conf", text) == message


def test_startup_long_name(tmp_path):
    assert error(tmp_path, "b.conf", f"NAME={'n' * 256} /bin/true\n") == \
        f"b.conf:1: NAME: bad name '{'n' * 256}' (no '/', under 256 bytes)"


# ---- TOML: every key --------------------------------------------------------------------

TOML_KEYS = [
    ("name", 'name = "w"', "name", "w"),
    ("command", "command = \"/bin/sh -c 'echo hi' x\"", "argv", ["/bin/sh", "-c", "echo hi", "x"]),
    ("argv", 'argv = ["/bin/echo", "a b"]', "argv", ["/bin/echo", "a b"]),
    ("env", 'env = { A = "1", PORT = 8080 }', "env", {"A": "1", "PORT": "8080"}),
    ("uid", 'uid = "nobody"', "uid", NOBODY.pw_uid),
    ("uid", "uid = 0", "gid", 0),
    ("gid", 'gid = "nogroup"', "gid", grp.getgrnam("nogroup").gr_gid),
    ("gid", "gid = 123", "gid", 123),
    ("cwd", 'cwd = "/var"', "cwd", "/var"),
    ("umask", 'umask = "027"', "umask", 0o027),
    ("umask", "umask = 0o077", "umask", 0o077),
    ("rlimits", 'rlimits = { nofile = [1024, 4096], core = "unlimited", NPROC = 50 }', "rlimits",
     {"nofile": [1024, 4096], "core": [None, None], "nproc": [50, 50]}),
    ("nice", "nice = -5", "nice", -5),
    ("sched", 'sched = { policy = "fifo", priority = 10 }', "sched", {"policy": "fifo", "priority": 10}),
    ("sched", 'sched = { policy = "batch" }', "sched", {"policy": "batch", "priority": 0}),
    ("cpus", 'cpus = "0,2-3"', "cpus", [0, 2, 3]),
    ("cpus", "cpus = [3, 1, 1]", "cpus", [1, 3]),
    ("cgroup", 'cgroup = { "memory.max" = "64M", "pids.max" = 100 }', "cgroup",
     {"memory.max": "64M", "pids.max": "100"}),
    ("stdout", 'stdout = "syslog"', "stdout", "syslog"),
    ("stdout", 'stdout = "file:/var/log/w.log"', "stdout", "file:/var/log/w.log"),
    ("stderr", 'stderr = "stdout"', "stderr", "stdout"),
    ("stderr", 'stderr = "null"', "stderr", "null"),
    ("log_max_bytes", "log_max_bytes = 65536", "log_max_bytes", 65536),
    ("log_keep", "log_keep = 0", "log_keep", 0),
    ("stop_signal", 'stop_signal = "SIGINT"', "stop_signal", 2),
    ("stop_signal", "stop_signal = 10", "stop_signal", 10),
    ("stop_timeout", 'stop_timeout = "1m"', "stop_timeout", 60.0),
    ("kill_signal", 'kill_signal = "QUIT"', "kill_signal", 3),
    ("grace", "grace = 1", "grace", 1.0),
    ("restart", 'restart = "on-failure"', "restart", "on-failure"),
    ("max_restarts", "max_restarts = 0", "max_restarts", 0),
    ("restart_window", 'restart_window = "90s"', "restart_window", 90.0),
    ("backoff_initial", 'backoff_initial = "250ms"', "backoff_initial", 0.25),
    ("backoff_max", "backoff_max = 5", "backoff_max", 5.0),
    ("backoff_factor", "backoff_factor = 1.5", "backoff_factor", 1.5),
    ("reset_after", "reset_after = 120", "reset_after", 120.0),
    ("on_limit", 'on_limit = "escalate"\ngroup = "g"', "on_limit", "escalate"),
    ("on_limit_command", "on_limit = \"exec\"\non_limit_command = \"/sbin/alert 'w failed'\"",
     "on_limit_command", "/sbin/alert 'w failed'"),
    ("group", 'group = "pumps"', "group", "pumps"),
    ("safe_after", "safe_after = 30", "safe_after", 30.0),
    ("safe_arg", 'safe_arg = "--safe-mode"', "safe_arg", "--safe-mode"),
    ("heartbeat", 'heartbeat = "200ms"', "heartbeat", 0.2),
    ("missed_low", "missed_low = 2", "missed_low", 2),
    ("missed_high", "missed_high = 9", "missed_high", 9),
    ("after", 'after = ["db"]', "after", ["db"]),
    ("ready", 'ready = "notify"', "ready", "notify"),
    ("ready", 'ready = "path:/run/w.sock"', "ready", "path:/run/w.sock"),
    ("ready", 'ready = "delay:1.5s"', "ready", "delay:1.5"),
    ("ready", 'ready = "none"', "ready", "none"),
    ("condition", '[[service.w.condition]]\nname = "d"\ntype = "CONDDEATH"', "conditions",
     [{"name": "d", "type": q.CONDDEATH, "flags": 0, "actions": []}]),
]


@pytest.mark.parametrize("key, toml, spec_key, value", TOML_KEYS)
def test_toml_key(tmp_path, key, toml, spec_key, value):
    base = '[service.db]\ncommand = "/bin/true"\n'
    body = f'[service.w]\ncommand = "/bin/true"\n{toml}\n'
    if key == "argv" or key == "command":
        body = f"[service.w]\n{toml}\n"
    specs, _, _ = config.load([write(tmp_path, "b.toml", base + body)])
    assert specs[1][spec_key] == value
    assert type(specs[1][spec_key]) is type(value)


def test_every_key_is_tested_and_documented():
    assert {key for key, *_ in TOML_KEYS} == set(service.SERVICE_KEYS)
    table = config.schema_markdown()
    for key in service.SERVICE_KEYS:
        assert f"| `{key}` |" in table
    for var in config.STARTUP_VARS:
        assert f"`{var}`" in table
    assert "| `kill_signal` | `KILL_SIGNAL` | signal | SIGABRT |" in table


def test_toml_array_form_and_groups(tmp_path):
    path = write(tmp_path, "b.toml", '[[service]]\nname = "a"\ncommand = "/bin/true"\n\n'
                 '[[service]]\nname = "b"\nargv = ["/bin/true"]\ngroup = "g"\n')
    specs, groups, _ = config.load([path])
    assert [(s["name"], s["source"]) for s in specs] == [("a", f"{path}:1"), ("b", f"{path}:5")]
    assert groups == {"g": {"strategy": "cascade", "window": 60.0, "source": f"{path}:5"}}


@pytest.mark.parametrize("strategy", ["cascade", "one_for_all", "rest_for_one"])
def test_toml_group(tmp_path, strategy):
    path = write(tmp_path, "b.toml", f'\n[group.g]\nstrategy = "{strategy}"\nwindow = "2m"\n')
    assert config.load([path]) == ([], {"g": {"strategy": strategy, "window": 120.0,
                                              "source": f"{path}:2"}}, [])


def test_toml_full_qnx_tree(tmp_path):
    spec = load_one(tmp_path, "b.toml", """
[service.media]
command = "/usr/bin/mediaware"

[[service.media.condition]]
name = "death"
type = "CONDDEATH"
flags = ["HREARMAFTERRESTART", "HCONDINDEPENDENT"]

[[service.media.condition.action]]
name = "cleanup"
kind = "execute"
params = { line = "/bin/clear.sh", timeout = 5 }
flags = ["HACTIONBREAKONFAIL", "HACTIONKEEPONFAIL"]

[[service.media.condition.action.fail]]
name = "note"
kind = "log"
params = { message = "cleanup failed", prefix = true }

[[service.media.condition.action]]
name = "wait"
kind = "waitfor"
params = { path = "/dev/media", delay = 2000 }

[[service.media.condition.action]]
name = "tell"
kind = "notify_signal"
params = { pid = 1, signum = "SIGUSR1", value = 7 }

[[service.media.condition]]
name = "poked"
type = 8
flags = ["HCONDSTATETOSET"]
from = 0
to = 6

[[service.media.condition]]
name = "fault"
type = "CONDRAISE"
rtype = 1
rseverity = 3
""")
    death, state, fault = spec["conditions"]
    assert death == {"name": "death", "type": q.CONDDEATH,
                     "flags": q.HREARMAFTERRESTART | q.HCONDINDEPENDENT, "actions": [
        {"name": "cleanup", "kind": "execute", "params": {"line": "/bin/clear.sh", "timeout": 5},
         "flags": q.HACTIONBREAKONFAIL | q.HACTIONKEEPONFAIL,
         "fails": [{"name": "note", "kind": "log",
                    "params": {"message": "cleanup failed", "prefix": 1, "verbosity": 0}}]},
        {"name": "wait", "kind": "waitfor", "params": {"path": "/dev/media", "delay": 2000},
         "flags": 0, "fails": []},
        {"name": "tell", "kind": "notify_signal",
         "params": {"pid": 1, "signum": signal.SIGUSR1, "value": 7, "code": 0}, "flags": 0,
         "fails": []}]}
    assert state == {"name": "poked", "type": q.CONDSTATE, "flags": q.HCONDSTATETOSET,
                     "from": 0, "to": 6, "actions": []}
    assert fault == {"name": "fault", "type": q.CONDRAISE, "flags": 0, "rtype": 1, "rclass": 0,
                     "rseverity": 3, "actions": []}


TREE = '[service.w]\ncommand = "/bin/true"\n\n[[service.w.condition]]\nname = "c"\n'


@pytest.mark.parametrize("text, message", [
    ('[service.w]\ncommand = "/bin/true"\nrestarts = 3\n', "b.toml:1: unknown key 'restarts'"),
    ('\n\n[service.w]\ncommand = "/bin/true"\ncommand = "/bin/false"\n',
     "b.toml:5: Cannot overwrite a value (column 23)"),
    ('[service.w]\ncommand = \n', "b.toml:2: Invalid value (column 11)"),
    ('[service.w]\nargv = ["/bin/true",\n', "b.toml:2: Invalid value (at the end)"),
    ('[servce.w]\ncommand = "/bin/true"\n', "b.toml:1: unknown table 'servce' (service, group, global or placeholder)"),
    ('\n[service.w]\nargv = ["/bin/true"]\ncommand = "/bin/true"\n',
     "b.toml:2: give command or argv, not both"),
    ('[service.w]\nrestart = "always"\n', "b.toml:1: no command (command or argv)"),
    ('[service.w]\ncommand = ""\n', "b.toml:1: command: empty command"),
    ('[service.w]\ncommand = "/bin/sh -c \'x"\n', "b.toml:1: command: bad quoting: no closing quotation"),
    ('[service.w]\nargv = "/bin/true"\n', "b.toml:1: argv: must be a non-empty list of text"),
    ('[service.w]\nname = "v"\ncommand = "/bin/true"\n',
     "b.toml:1: name 'v' differs from the table's 'w'"),
    ('[[service]]\ncommand = "/bin/true"\n', "b.toml:1: no name"),
    ('[service]\nw = 3\n', "b.toml:1: service 'w' must be a table"),
    ('[service.w]\ncommand = "/bin/true"\nheartbeat = true\n',
     "b.toml:1: heartbeat: bad duration True (seconds, or 500ms, 2s, 1m, 1h)"),
    ('[service.w]\ncommand = "/bin/true"\nmax_restarts = 1.5\n',
     "b.toml:1: max_restarts: must be an integer, not 1.5"),
    ('[service.w]\ncommand = "/bin/true"\nuid = "no_such_user_here"\n',
     "b.toml:1: uid: unknown user 'no_such_user_here'"),
    ('[service.w]\ncommand = "/bin/true"\ngid = "no_such_group_here"\n',
     "b.toml:1: gid: unknown group 'no_such_group_here'"),
    ('[service.w]\ncommand = "/bin/true"\numask = "089"\n', "b.toml:1: umask: bad octal mask '089'"),
    ('[service.w]\ncommand = "/bin/true"\numask = 1000\n',
     "b.toml:1: umask: must be between 000 and 777, not 1750"),
    ('[service.w]\ncommand = "/bin/true"\nrlimits = { files = 3 }\n',
     "b.toml:1: rlimits: unknown resource 'files' (one of "
     + ", ".join(service.RLIMIT_NAMES) + ")"),
    ('[service.w]\ncommand = "/bin/true"\nrlimits = { nofile = [10, 5] }\n',
     "b.toml:1: rlimits: nofile: the soft limit is above the hard limit"),
    ('[service.w]\ncommand = "/bin/true"\nrlimits = { core = -1 }\n',
     "b.toml:1: rlimits: bad limit -1 (a number or \"unlimited\")"),
    ('[service.w]\ncommand = "/bin/true"\nnice = 20\n', "b.toml:1: nice: must be between -20 and 19, not 20"),
    ('[service.w]\ncommand = "/bin/true"\nsched = { policy = "rr" }\n',
     "b.toml:1: sched: rr takes a priority in 1..99, not 0"),
    ('[service.w]\ncommand = "/bin/true"\nsched = { policy = "fast" }\n',
     "b.toml:1: sched: policy must be one of other, batch, idle, fifo, rr, not 'fast'"),
    ('[service.w]\ncommand = "/bin/true"\nsched = { policy = "rr", prio = 3 }\n',
     "b.toml:1: sched: unknown key 'prio'"),
    ('[service.w]\ncommand = "/bin/true"\ncpus = "3-1"\n', "b.toml:1: cpus: bad CPU range '3-1'"),
    ('[service.w]\ncommand = "/bin/true"\ncpus = "a"\n', "b.toml:1: cpus: bad CPU list 'a'"),
    ('[service.w]\ncommand = "/bin/true"\ncpus = []\n', "b.toml:1: cpus: no CPUs"),
    ('[service.w]\ncommand = "/bin/true"\ncgroup = { "memory/max" = "1" }\n',
     "b.toml:1: cgroup: bad cgroup file 'memory/max' (controller.file, e.g. memory.max)"),
    ('[service.w]\ncommand = "/bin/true"\nenv = { A = true }\n',
     "b.toml:1: env: A must be text, not a boolean"),
    ('[service.w]\ncommand = "/bin/true"\nstdout = "file:log"\n',
     "b.toml:1: stdout: must be an absolute path, not 'log'"),
    ('[service.w]\ncommand = "/bin/true"\nstdout = "stdout"\n',
     "b.toml:1: stdout: must be inherit, null, syslog or file:/abs/path, not 'stdout'"),
    ('[service.w]\ncommand = "/bin/true"\nlog_max_bytes = 0\n', "b.toml:1: log_max_bytes: must be at least 1 (got 0)"),
    ('[service.w]\ncommand = "/bin/true"\nready = "soon"\n',
     "b.toml:1: ready: must be none, notify, path:/abs/path or delay:SECONDS, not 'soon'"),
    ('[service.w]\ncommand = "/bin/true"\nready = "delay:x"\n',
     "b.toml:1: ready: bad duration 'x' (seconds, or 500ms, 2s, 1m, 1h)"),
    ('[service.w]\ncommand = "/bin/true"\non_limit = "exec"\n',
     "b.toml:1: on_limit_command goes with on_limit = exec, and only with it"),
    ('[service.w]\ncommand = "/bin/true"\non_limit = "escalate"\n',
     "b.toml:1: on_limit = escalate restarts the service's group: set group too"),
    ('[service.w]\ncommand = "/bin/true"\non_limit = "panic"\n',
     "b.toml:1: on_limit: must be log, stop, escalate, reboot, exec, not 'panic'"),
    ('[service.w]\ncommand = "/bin/true"\nbackoff_factor = 0.5\n', "b.toml:1: backoff_factor: must be at least 1"),
    ('[service.w]\ncommand = "/bin/true"\nbackoff_max = 0.01\n', "b.toml:1: backoff_max is below backoff_initial"),
    ('[service.w]\ncommand = "/bin/true"\nafter = "db"\n', "b.toml:1: after: unknown service 'db'"),
    ('[service.w]\ncommand = "/bin/true"\nafter = [3]\n', "b.toml:1: after: bad name 3 (no '/', under 256 bytes)"),
    ('[service.a]\ncommand = "/bin/true"\nafter = ["b"]\n[service.b]\ncommand = "/bin/true"\n'
     'after = ["a"]\n', "b.toml:1: after: start-order cycle a -> b -> a"),
    ('[group.g]\nstrategy = "all"\n',
     "b.toml:1: strategy: must be cascade, one_for_all, rest_for_one, not 'all'"),
    ('[group.g]\nwindow = 0\n', "b.toml:1: window: must be positive"),
    ('[group.g]\nsize = 0\n', "b.toml:1: unknown key 'size'"),
    ('group = 3\n', "b.toml:1: group must be a table"),
    # QNX trees: the line of the condition's or action's own table
    (TREE + 'type = "CONDNOPE"\n', "b.toml:4: condition 'c': unknown condition type 'CONDNOPE'"),
    (TREE + 'type = 10\n', "b.toml:4: condition 'c': unknown condition type 10"),
    (TREE, "b.toml:4: condition 'c': no type"),
    (TREE + 'type = "CONDDEATH"\nflags = ["HCONDFOO"]\n',
     "b.toml:4: condition 'c': unknown condition flag 'HCONDFOO'"),
    (TREE + 'type = "CONDDEATH"\nflags = ["HACTIONDONOW"]\n',
     "b.toml:4: condition 'c': unknown condition flag 'HACTIONDONOW'"),
    (TREE + 'type = "CONDDEATH"\nfrom = 1\n',
     "b.toml:4: condition 'c': from belongs to a CONDSTATE or CONDRAISE condition"),
    (TREE + 'type = "CONDDEATH"\nflags = ["HCONDSTATETOSET"]\n',
     "b.toml:4: condition 'c': the state-set flags belong to a CONDSTATE condition"),
    (TREE + 'type = "CONDDEATH"\ncolour = 1\n', "b.toml:4: condition 'c': unknown key 'colour'"),
    (TREE + 'type = "CONDDEATH"\n[[service.w.condition]]\nname = "c"\ntype = "CONDDETACH"\n',
     "b.toml:7: condition 'c': condition w/c exists"),
    (TREE + 'type = "CONDDEATH"\n\n[[service.w.condition.action]]\nname = "a"\nkind = "log"\n'
     'params = { message = "x" }\nflags = ["HCONDNOWAIT"]\n',
     "b.toml:8: condition 'c' action 'a': unknown action flag 'HCONDNOWAIT'"),
    (TREE + 'type = "CONDDETACH"\n[[service.w.condition.action]]\nname = "r"\nkind = "restart"\n'
     'params = { line = "/bin/true" }\n',
     "b.toml:7: condition 'c' action 'r': restart belongs in a death condition of an entity"),
    (TREE + 'type = "CONDDEATH"\n[[service.w.condition.action]]\nname = "r"\nkind = "reboot"\n',
     "b.toml:7: condition 'c' action 'r': action kind 'reboot'"),
    (TREE + 'type = "CONDDEATH"\n[[service.w.condition.action]]\nname = "r"\nkind = "waitfor"\n'
     'params = { delay = 0 }\n', "b.toml:7: condition 'c' action 'r': waitfor: delay must be > 0 ms"),
    (TREE + 'type = "CONDDEATH"\n[[service.w.condition.action]]\nname = "s"\nkind = "notify_signal"\n'
     'params = { pid = 1, signum = "SIGNOPE", value = 0 }\n',
     "b.toml:7: condition 'c' action 's': unknown signal 'SIGNOPE'"),
    (TREE + 'type = "CONDDEATH"\n[[service.w.condition.action]]\nname = "a"\nkind = "log"\n'
     'params = { message = "x" }\n[[service.w.condition.action.fail]]\nname = "f"\n'
     'kind = "heartbeat_healthy"\n',
     "b.toml:11: condition 'c' action 'a' fail 'f': heartbeat_healthy cannot be in an action-fail list"),
])
def test_toml_bad(tmp_path, text, message):
    assert error(tmp_path, "b.toml", text) == message


@pytest.mark.parametrize("text,message", [
    # Found by the fuzzer (tests/fuzzing.py): an integer past a float's range was an
    # OverflowError, not a ConfigError.
    ('[service.a]\ncommand = "/bin/true"\nbackoff_initial = 1' + "0" * 400 + "\n",
     "b.toml:1: backoff_initial: bad duration 1" + "0" * 400 + " (seconds, or 500ms, 2s, 1m, 1h)"),
    ('[service.a]\ncommand = "/bin/true"\nbackoff_factor = 1' + "0" * 400 + "\n",
     "b.toml:1: backoff_factor: must be a number, not 1" + "0" * 400),
    ('[service.a]\ncommand = "/bin/true"\nheartbeat = "1e308h"\n',
     "b.toml:1: heartbeat: bad duration '1e308h' (too long)"),
])
def test_toml_numbers_out_of_range(tmp_path, text, message):
    assert error(tmp_path, "b.toml", text) == message


def test_toml_second_service_error_points_at_its_header(tmp_path):
    text = ('[service.a]\ncommand = "/bin/true"\n\n[service."b c"]\n# b\n\ncommand = "/bin/true"\n'
            'nice = 99\n')
    assert error(tmp_path, "b.toml", text) == "b.toml:4: nice: must be between -20 and 19, not 99"
    text = '[[service]]\nname = "a"\ncommand = "/bin/true"\n[[service]]\nname = "b"\nrestart = 1\n'
    assert error(tmp_path, "b.toml", text) == \
        "b.toml:4: restart: must be always, on-failure, never, not 1"
    # a service made only of a subtable: the subtable's line
    text = '[service.a]\ncommand = "/bin/true"\n[service.b.env]\nA = "1"\n'
    assert error(tmp_path, "b.toml", text) == "b.toml:3: no command (command or argv)"


def test_toml_array_form_condition_lines(tmp_path):
    text = ('[[service]]\nname = "a"\ncommand = "/bin/true"\n[[service.condition]]\nname = "ok"\n'
            'type = "CONDDEATH"\n[[service]]\nname = "b"\ncommand = "/bin/true"\n'
            '[[service.condition]]\nname = "ok"\ntype = "CONDDEATH"\n[[service.condition]]\n'
            'name = "bad"\ntype = "CONDWHAT"\n')
    assert error(tmp_path, "b.toml", text) == \
        "b.toml:13: condition 'bad': unknown condition type 'CONDWHAT'"


def test_errors_span_files_and_nothing_partial(tmp_path):
    first = write(tmp_path, "a.conf", "NAME=web /bin/true\n")
    second = write(tmp_path, "b.toml", '[service.web]\ncommand = "/bin/false"\n')
    with pytest.raises(ConfigError) as caught:
        config.load([first, second])
    assert str(caught.value) == f"{second}:1: service 'web' is defined twice (first at {first}:1)"
    third = write(tmp_path, "c.toml", '[service.db]\ncommand = "/bin/true"\nafter = ["web"]\n')
    specs, _, _ = config.load([first, third])  # AFTER across files
    assert [s["name"] for s in specs] == ["web", "db"]
    group_a = write(tmp_path, "g1.toml", "[group.g]\n")
    group_b = write(tmp_path, "g2.toml", "\n[group.g]\n")
    with pytest.raises(ConfigError, match=r"g2.toml:2: group 'g' is defined twice \(first at .*g1.toml:1\)"):
        config.load([group_a, group_b])


def test_unreadable_files(tmp_path):
    missing = str(tmp_path / "nope.conf")
    with pytest.raises(ConfigError) as caught:
        config.load([missing])
    assert str(caught.value) == f"{missing}: cannot read: No such file or directory"
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError) as caught:
        config.load([str(binary)])
    assert str(caught.value) == f"{binary}: not UTF-8 text"


# ---- users and groups ----------------------------------------------------------------------

@pytest.fixture
def system_user():
    """A real system user with its own group, created for the test (root only)."""
    if os.geteuid() != 0:
        pytest.skip("creating a user needs root")
    name = f"hamcfg{os.getpid() % 100000}"
    subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", name], check=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=True)


def test_user_and_group_resolved(tmp_path, system_user):
    name = system_user.pw_name
    spec = load_one(tmp_path, "b.conf", f"USER={name} /bin/true\n")
    assert (spec["uid"], spec["gid"]) == (system_user.pw_uid, system_user.pw_gid)
    spec = load_one(tmp_path, "b.toml",
                    f'[service.w]\ncommand = "/bin/true"\nuid = "{name}"\ngid = "nogroup"\n')
    assert (spec["uid"], spec["gid"]) == (system_user.pw_uid, grp.getgrnam("nogroup").gr_gid)


# ---- diff for reload --------------------------------------------------------------------

def test_diff(tmp_path):
    old, _, _ = config.load([write(tmp_path, "old.conf", "NAME=a /bin/true\nNAME=b /bin/true\n"
                                                       "NAME=c HEARTBEAT=1 /bin/true\n")])
    # a moved to another line (source changes, spec does not), b gone, c changed, d new
    new, _, _ = config.load([write(tmp_path, "new.conf", "\nNAME=d /bin/true\nNAME=a /bin/true\n"
                                                       "NAME=c HEARTBEAT=2 /bin/true\n")])
    added, removed, changed, unchanged = config.diff(old, new)
    assert [s["name"] for s in added] == ["d"]
    assert [s["name"] for s in removed] == ["b"] and removed[0] is old[1]
    assert [(s["name"], s["heartbeat"]) for s in changed] == [("c", 2.0)]
    assert [s["name"] for s in unchanged] == ["a"] and unchanged[0] is new[1]
    assert config.diff(new, new) == ([], [], [], new)


def test_same_service_in_both_formats_is_unchanged(tmp_path):
    conf = config.load([write(tmp_path, "b.conf",
                              "NAME=w HEARTBEAT=2s KILL_SIGNAL=SEGV AFTER=db X=1 /bin/w --v\n"
                              "NAME=db /bin/db\n")])[0]
    toml = config.load([write(tmp_path, "b.toml", '[service.w]\nargv = ["/bin/w", "--v"]\n'
                              'heartbeat = 2\nkill_signal = 11\nafter = ["db"]\nenv = {X = "1"}\n'
                              '[service.db]\ncommand = "/bin/db"\n')])[0]
    assert config.diff(conf, toml) == ([], [], [], toml)


# ---- the demo board ---------------------------------------------------------------------

def test_demo_board_round_trip():
    """scripts/examples/board.toml and board.conf: the same board, every service runnable."""
    examples = ROOT / "scripts" / "examples"
    specs, groups, _ = config.load([str(examples / "board.toml")])
    by_name = {spec["name"]: spec for spec in specs}
    assert list(by_name) == ["steady", "flaky", "follower", "worker"]
    assert groups["chain"]["strategy"] == "rest_for_one"
    assert by_name["flaky"]["argv"] == ["/bin/sh", "-c", "sleep 2; kill -SEGV $$"]
    assert by_name["follower"]["after"] == ["flaky"]
    worker = by_name["worker"]
    assert worker["argv"] == [str(examples / "beating_worker.sh")]
    assert (worker["heartbeat"], worker["missed_low"], worker["missed_high"]) == (1.0, 2, 4)
    assert worker["conditions"][0]["type"] == q.CONDHBEATMISSEDLOW
    for spec in specs:
        assert os.access(spec["argv"][0], os.X_OK), spec["argv"][0]
    conf, conf_groups, _ = config.load([str(examples / "board.conf")])
    assert [spec["name"] for spec in conf] == list(by_name)
    assert conf_groups["chain"]["strategy"] == "cascade"  # a startup file cannot set one
    _added, _removed, changed, unchanged = config.diff(specs, conf)
    # the TOML adds what a startup file cannot say: readiness, backoff, stderr, QNX trees
    assert [s["name"] for s in unchanged] == ["follower"]
    for old, new in zip(specs, conf):
        keep = ("argv", "env", "heartbeat", "missed_low", "missed_high", "kill_signal", "grace",
                "group", "after", "max_restarts")
        assert {k: old[k] for k in keep} == {k: new[k] for k in keep}, old["name"]


def test_demo_worker_beats_with_hamtools(tmp_path):
    """The worker script runs the HAMTOOLS it is given, once per beat, with its entity name."""
    fake = tmp_path / "hamtools"
    log = tmp_path / "beats"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    fake.chmod(0o755)
    worker = subprocess.Popen([str(ROOT / "scripts" / "examples" / "beating_worker.sh")],
                              env={"PATH": os.environ["PATH"], "HAMTOOLS": str(fake),
                                   "HAM_ENTITY": "worker", "PERIOD": "0.05", "BEATS": "3",
                                   "STALL": "5"})
    try:
        deadline = 100
        while deadline and (not log.exists() or len(log.read_text().splitlines()) < 3):
            deadline -= 1
            time.sleep(0.05)
    finally:
        worker.kill()
        worker.wait()
    assert log.read_text().splitlines() == ["heartbeat worker"] * 3


# ---- the trees of entities that are not services: the global entity, placeholders ------

GLOBAL_AND_PLACEHOLDER = """
[[global.condition]]
name = "anydeath"
type = "CONDDEATH"
flags = ["HREARMAFTERRESTART"]

[[global.condition.action]]
name = "note"
kind = "log"
params = { message = "something died" }

[placeholder.media]
flags = ["HENTITYKEEPONDEATH"]

[[placeholder.media.condition]]
name = "ok"
type = "CONDSTATE"
from = 1
to = 2

[[placeholder.media.condition]]
name = "died"
type = "CONDDEATH"

[[placeholder.media.condition.action]]
name = "restart"
kind = "restart"
params = { line = "/usr/bin/mediaware" }
"""


def test_toml_global_conditions_and_placeholders(tmp_path):
    path = write(tmp_path, "b.toml", GLOBAL_AND_PLACEHOLDER)
    specs, groups, trees = config.load([path])
    assert (specs, groups) == ([], {})
    glob, media = trees
    assert (glob["name"], glob["kind"], glob["flags"]) == (".__global", "global", 0)
    assert glob["conditions"] == [{
        "name": "anydeath", "type": q.CONDDEATH, "flags": q.HREARMAFTERRESTART, "source": f"{path}:2",
        "actions": [{"name": "note", "kind": "log", "flags": 0, "fails": [],
                     "params": {"message": "something died", "verbosity": 0, "prefix": 0}}]}]
    assert (media["name"], media["kind"], media["flags"], media["source"]) == (
        "media", "placeholder", q.HENTITYKEEPONDEATH, f"{path}:12")
    ok, died = media["conditions"]
    assert (ok["type"], ok["from"], ok["to"], ok["actions"]) == (q.CONDSTATE, 1, 2, [])
    assert (died["type"], died["actions"][0]["kind"]) == (q.CONDDEATH, "restart")


def test_global_conditions_from_several_files_are_one_entry(tmp_path):
    first = write(tmp_path, "a.toml", '[[global.condition]]\nname = "a"\ntype = "CONDDEATH"\n')
    second = write(tmp_path, "b.toml", '\n[[global.condition]]\nname = "b"\ntype = "CONDATTACH"\n')
    _specs, _groups, trees = config.load([first, second])
    assert [(c["name"], c["source"]) for c in trees[0]["conditions"]] == [("a", f"{first}:1"), ("b", f"{second}:2")]
    again = write(tmp_path, "c.toml", '[[global.condition]]\nname = "a"\ntype = "CONDDETACH"\n')
    with pytest.raises(ConfigError) as caught:
        config.load([first, again])
    assert str(caught.value) == f"{again}:1: global condition 'a' is defined twice (first at {first}:1)"


@pytest.mark.parametrize("text, message", [
    ('[global]\nflags = ["HENTITYKEEPONDEATH"]\n', "b.toml:1: unknown key 'flags' in a global table (condition)"),
    ('\n[[global.condition]]\nname = "r"\ntype = "CONDDEATH"\n[[global.condition.action]]\nname = "x"\n'
     'kind = "restart"\nparams = { line = "/bin/true" }\n',
     "b.toml:5: condition 'r' action 'x': restart belongs in a death condition of an entity"),
    ('[[global.condition]]\nname = "s"\ntype = "CONDNOPE"\n', "b.toml:1: condition 's': unknown condition type 'CONDNOPE'"),
    ('[placeholder.p]\nflags = ["HCONDNOWAIT"]\n', "b.toml:1: flags: unknown entity flag 'HCONDNOWAIT'"),
    ('[placeholder.p]\ncommand = "/bin/true"\n', "b.toml:1: unknown key 'command' in a placeholder table (flags, condition)"),
    ('\n\n[placeholder."a/b"]\n', "b.toml:3: placeholder: bad name 'a/b' (no '/', under 256 bytes)"),
    ('[placeholder.p]\n[[placeholder.p.condition]]\nname = "c"\ntype = "CONDSTATE"\nflags = ["HBOGUS"]\n',
     "b.toml:2: condition 'c': unknown condition flag 'HBOGUS'"),
    ('placeholder = 3\n', "b.toml:1: placeholder must be a table of [placeholder.NAME] tables"),
    ('[service.p]\ncommand = "/bin/true"\n[placeholder.p]\n', "b.toml:3: placeholder 'p' is defined twice (first at b.toml:1)"),
    ('[placeholder.p]\n[service.w]\ncommand = "/bin/true"\nafter = ["p"]\n',
     "b.toml:2: after: 'p' is a placeholder (at b.toml:1), not a service"),
])
def test_toml_bad_global_and_placeholder(tmp_path, text, message):
    assert error(tmp_path, "b.toml", text) == message


def test_the_readme_schema_tables_are_schema_markdowns():
    """The README's key tables are exactly what the code generates: no row added by hand,
    none missing, none stale."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("| key (TOML) | startup file |")
    end = readme.index("\n\n", readme.index("| group key (TOML) |")) + 1
    assert readme[start:end] == config.schema_markdown()

"""pulsedemo from the built zipapp: the seed 003 programs' transcripts, real signals."""

import re
import signal
import subprocess
import time

import pytest


@pytest.fixture
def spawn_zip(hamtools_zip, clean_python, tmp_path):
    procs = []

    def spawn(*args):
        proc = subprocess.Popen([clean_python, "-I", str(hamtools_zip), *map(str, args)],
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_thread_pulse_prints_the_seed_transcript(run_zip):
    done = run_zip("pulsedemo", "thread-pulse", "5", "--max-sleep", "0.5")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == ["Create Second Channel returns: Resource busy",
                         "Create threads from 2 to 6 ... "]
    dead = [re.fullmatch(r"Thread (\d+) dead", line) for line in lines[2:]]
    assert all(dead) and sorted(int(m.group(1)) for m in dead) == [2, 3, 4, 5, 6]


def test_thread_pulse_default_is_ten_threads(run_zip):
    done = run_zip("pulsedemo", "thread-pulse", "--max-sleep", "0.1")
    assert done.stdout.splitlines()[1] == "Create threads from 2 to 11 ... "
    assert len(done.stdout.splitlines()) == 12


def test_disconnect_comes_only_after_the_last_detach(run_zip):
    done = run_zip("pulsedemo", "disconnect")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert re.search(r"Client: pid \d+ attached twice: coid \d+ and coid \d+", out)
    # the pulse is the last line, after the client's final detach
    lines = out.splitlines()
    assert lines[-2].startswith("Client: detaching coid") and lines[-2].endswith("the last one")
    assert re.fullmatch(r"Server: _PULSE_CODE_DISCONNECT, scoid \d+: the client's last "
                        r"connection is gone", lines[-1])
    assert out.count("_PULSE_CODE_DISCONNECT") == 1  # exactly one pulse, for the last detach


def test_coiddeath_sees_the_server_crash(run_zip):
    done = run_zip("pulsedemo", "coiddeath")
    assert done.returncode == 0, done.stderr
    coid = re.search(r"as coid (\d+);", done.stdout).group(1)
    assert f"Client: _PULSE_CODE_COIDDEATH for coid {coid}: the server died" in done.stdout
    assert done.stdout.rstrip().endswith("the server ended with signal SIGSEGV")


def test_coiddeath_watches_an_external_server(spawn_zip):
    server = spawn_zip("pulsedemo", "unblock-server")
    pid, chid = re.search(r"pid = (\d+), chid = (\d+)", server.stdout.readline()).groups()
    watcher = spawn_zip("pulsedemo", "coiddeath", "--pid", pid, "--chid", chid)
    assert "waiting for it to die" in watcher.stdout.readline()
    time.sleep(0.2)
    assert watcher.poll() is None  # blocked, no CPU, until the server dies
    server.kill()
    out, _ = watcher.communicate(timeout=10)
    assert "_PULSE_CODE_COIDDEATH" in out and watcher.returncode == 0


def start_pair(spawn_zip, *server_args):
    server = spawn_zip("pulsedemo", "unblock-server", *server_args)
    pid, chid = re.search(r"pid = (\d+), chid = (\d+)", server.stdout.readline()).groups()
    client = spawn_zip("pulsedemo", "unblock-client", pid, chid)
    assert client.stdout.readline().startswith("Client: sending")
    assert server.stdout.readline().startswith("Server: Received a message, rcvid is")
    return server, client


def test_ctrl_c_unblocks_through_the_server(spawn_zip):
    server, client = start_pair(spawn_zip)
    client.send_signal(signal.SIGINT)
    out, _ = client.communicate(timeout=10)
    assert out == "Client: MsgSend returned: Interrupted function call (the server let us go)\n"
    assert client.returncode == 130
    assert server.stdout.readline() == "Server: Received a Pulse, pulse code is -32\n"
    assert re.fullmatch(r"Server: client with rcvid \d+ want to unblock, let go\n",
                        server.stdout.readline())


def test_a_server_that_ignores_unblock_keeps_the_client_blocked(spawn_zip):
    server, client = start_pair(spawn_zip, "--ignore-unblock")
    client.send_signal(signal.SIGINT)
    assert server.stdout.readline() == "Server: Received a Pulse, pulse code is -32\n"
    time.sleep(0.3)
    client.send_signal(signal.SIGINT)
    time.sleep(0.3)
    assert client.poll() is None, "Ctrl-C must not end a client the server keeps blocked"
    server.kill()
    out, _ = client.communicate(timeout=10)
    assert out == "Client: MsgSend returned: No such process (the server is gone)\n"


def test_listen_without_ham_says_so(run_zip, tmp_path):
    done = run_zip("pulsedemo", "listen", env={"HAM_RUNTIME_DIR": str(tmp_path / "none")})
    assert done.returncode == 3
    assert done.stderr == (f"pulsedemo: registering with ham: ham is not running "
                           f"(no socket in {tmp_path / 'none'})\n")


def test_client_of_a_missing_server_is_a_one_line_error(run_zip):
    done = run_zip("pulsedemo", "unblock-client", "1", "77")
    assert done.returncode == 1
    assert done.stderr == "pulsedemo: ConnectAttach to pid 1 chid 77: No such process\n"


def test_usage_errors_exit_2(run_zip):
    assert run_zip("pulsedemo", "thread-pulse", "zero").returncode == 2
    assert run_zip("pulsedemo", "frob").returncode == 2

"""Where ham's sockets and state live: /run/ham, or HAM_RUNTIME_DIR (SPEC §10).

Every client (hamctl, heartbeat, the Python API) and ham itself resolve it here.
"""

import os

DEFAULT_RUNTIME_DIR = "/run/ham"


def runtime_dir() -> str:
    return os.environ.get("HAM_RUNTIME_DIR") or DEFAULT_RUNTIME_DIR


def client_socket() -> str:
    """Self-attach, heartbeats, state/raise of one's own entities (mode 0666, SO_PEERCRED)."""
    return os.path.join(runtime_dir(), "client")


def control_socket() -> str:
    """Administration (mode 0660)."""
    return os.path.join(runtime_dir(), "control")

"""`sockmon`: run a restart script the moment a server's socket dies (not built yet)."""

from hamtools.core.pending import pending_main

USAGE = """\
Usage: sockmon --watch TARGET --restart SCRIPT [--watch TARGET --restart SCRIPT]...
       sockmon --config FILE
         [--retries N] [--retry-interval SECS] [--on-give-up exit|reboot|CMD] [--daemon]

TARGET is unix:PATH, tcp:HOST:PORT, pid:PID or name:PROG. When the server dies, SCRIPT
runs with SOCKMON_TARGET and SOCKMON_REASON set, then sockmon reconnects.
"""


def main(argv: list[str]) -> int:
    return pending_main("sockmon", USAGE, argv)

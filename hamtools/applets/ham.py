"""`ham`: the High Availability Manager daemon (not built yet)."""

from hamtools.core.pending import pending_main

USAGE = """\
Usage: ham [-v...] [-V N] [-d] [-f FILE] [-t none|relative|absolute|shortabs]
           [--runtime-dir DIR] [--foreground] [--group GROUP] [--config FILE]...
           [--watchdog DEV [--watchdog-timeout S]] [--realtime]

The High Availability Manager (QNX ham): supervises entities (spawned, adopted and
self-attached processes), fires conditions (death, abnormal death, detach, restart, missed
heartbeats, attach, state, raise) and runs their actions (restart, execute, waitfor,
notify pulse/signal, heartbeat_healthy, log). Control it with `hamctl`.
"""


def main(argv: list[str]) -> int:
    return pending_main("ham", USAGE, argv)

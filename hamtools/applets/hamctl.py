"""`hamctl`: control a running ham (not built yet)."""

from hamtools.core.pending import pending_main

USAGE = """\
Usage: hamctl COMMAND [ARGS...]
       hamctl -stop | +verbose | -verbose | =verbose     (QNX hamctrl options)

Commands: start [HAM ARGS...], stop [--stop-entities], status [--json], ls [PATH],
info PATH, attach, detach, condition, action, fail, enable, disable, remove, state, raise,
start|stop|restart ENTITY, lookup NAME [--wait SECS], events [--follow], check NAME,
reload, reexec, verbose up|down|get|set N.
"""


def main(argv: list[str]) -> int:
    return pending_main("hamctl", USAGE, argv)

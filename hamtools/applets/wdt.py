"""`wdt`: the Linux watchdog tool (not built yet)."""

from hamtools.core.pending import pending_main

USAGE = """\
Usage: wdt [-d DEV] [--json] info|list|timeleft|bootstatus
       wdt [-d DEV] set-timeout N|set-pretimeout N|set-governor NAME|ping|magic-close|disable|enable
       wdt feed [-T N[ms]] [-t N[ms]] [-F] [--nowayout] [DEV]
"""


def main(argv: list[str]) -> int:
    return pending_main("wdt", USAGE, argv)

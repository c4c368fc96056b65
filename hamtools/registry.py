"""The one static applet table: dispatch, --list, --install and help all read it.

Only the invoked applet's module is imported, so this file must stay pure data and cheap to
import (no dataclasses: it is on the heartbeat one-shot path).
"""


class Applet:
    __slots__ = ("name", "module", "summary", "cli", "native")

    def __init__(self, name: str, module: str, summary: str, cli: str, native: bool = False):
        self.name = name
        self.module = module  # imported only when the applet runs
        self.summary = summary
        # What shell completion reads of its command line (hamtools.completion): "module:app"
        # for a typer app (or a function that builds one), "module" for a hand parser whose
        # module has the OPTIONS table it parses with.
        self.cli = cli
        # True when the applet may import a native extension (psutil): the zipapp then
        # extracts the packages that hold one to disk when one is first imported
        # (hamtools.zipentry). Everything else runs straight from the zip.
        self.native = native

    def __repr__(self) -> str:
        return f"Applet({self.name!r})"


APPLETS: tuple[Applet, ...] = (
    Applet("ham", "hamtools.applets.ham", "the High Availability Manager daemon",
           "hamtools.applets.ham"),
    Applet("hamctl", "hamtools.applets.hamctl", "control a running ham (QNX hamctrl and more)",
           "hamtools.applets.hamctl:app"),
    Applet("heartbeat", "hamtools.applets.heartbeat", "send heartbeats to ham from shell scripts",
           "hamtools.applets.heartbeat"),
    Applet("sockmon", "hamtools.applets.sockmon", "run a restart script the moment a server's socket dies",
           "hamtools.applets.sockmon:build_app", native=True),
    Applet("wdt", "hamtools.applets.wdt", "query, set, ping and magic-close the Linux watchdog",
           "hamtools.applets.wdt_commands:app"),
    Applet("pulsedemo", "hamtools.applets.pulsedemo", "QNX system pulses on Linux, the seed's demo programs",
           "hamtools.applets.pulsedemo:app"),
)

_BY_NAME = {applet.name: applet for applet in APPLETS}


def find(name: str) -> Applet | None:
    return _BY_NAME.get(name)

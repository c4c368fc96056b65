"""ham's metrics for node_exporter's textfile collector (`ham --metrics-file PATH.prom`).

render() turns ham's model and counters into the Prometheus text format, version 0.0.4;
MetricsFile writes it when it differs from what it last wrote, by temp file + rename in the
same directory: node_exporter reads `*.prom` and never sees the temporary name, nor a
half-written file. ham calls it after each coalesced save, so a death,
a restart, a missed heartbeat or a hung-worker kill reaches the file a moment later, and a
heartbeat on time (which changes nothing ham saves) costs nothing. Figures that move without
a save (heartbeats taken, watchdog feeds) are left out: the file would show them stale.

Imported only when --metrics-file is given (the daemon's resident size is budgeted).
"""

from hamtools import __version__
from hamtools.core.atomic import write_atomic


def render(entities, *, started: float, ham_failures: int, watchdog: dict | None) -> str:
    """entities: the model's (hamtools.hamd.model.Entity); watchdog: hwdog's status() or None.
    Read from the model itself, not from ham's status, whose per-entity trees would leave
    their peak in the heap of a daemon whose resident size is budgeted."""
    entities = [e for e in entities if e.kind != "global"]
    beating = [e for e in entities if e.heartbeat]
    out: list[str] = []
    _family(out, "ham_build_info", "gauge", "hamtools version of the running ham",
            [({"version": __version__}, 1)])
    _family(out, "ham_start_time_seconds", "gauge", "when this ham started, seconds since the epoch",
            [({}, started)])
    _family(out, "ham_failures_total", "counter", "times ham itself failed and was replaced",
            [({}, ham_failures)])
    _family(out, "ham_entity_up", "gauge", "1 while the entity's process runs, else 0",
            [({"entity": e.name}, int(e.kind != "placeholder" and e.run == "running")) for e in entities])
    _family(out, "ham_entity_deaths_total", "counter", "deaths of the entity's processes",
            [({"entity": e.name}, e.deaths) for e in entities])
    _family(out, "ham_entity_restarts_total", "counter", "restarts of the entity by ham",
            [({"entity": e.name}, e.restarts) for e in entities])
    _family(out, "ham_entity_heartbeat_misses_total", "counter",
            "missed-heartbeat episodes: severity low (CONDHBEATMISSEDLOW) and high (CONDHBEATMISSEDHIGH)",
            [({"entity": e.name, "severity": severity}, count) for e in beating
             for severity, count in (("low", e.hb_missed_low), ("high", e.hb_missed_high))])
    if watchdog is not None:
        _watchdog(out, watchdog)
    return "".join(out)


def _watchdog(out: list[str], dog: dict) -> None:
    _family(out, "ham_watchdog_timeout_seconds", "gauge", "the hardware watchdog's timeout",
            [({}, dog["timeout"])])
    _family(out, "ham_watchdog_feeding", "gauge",
            "1 while ham feeds the hardware watchdog, 0 while a hung worker's kill is pending",
            [({}, int(dog["feeding"]))])
    _family(out, "ham_watchdog_pending_kills", "gauge", "hung workers whose kill is pending",
            [({}, len(dog["pending_kills"]))])
    last = dog.get("last_reset")
    _family(out, "ham_watchdog_last_boot_reset", "gauge",
            "1 when the last boot ended in a watchdog reset ham let happen (entity: the culprit)",
            [({"entity": str(last.get("culprit"))}, 1) if last else ({}, 0)])


def _family(out: list[str], name: str, kind: str, text: str, samples: list) -> None:
    out.append(f"# HELP {name} {text}\n# TYPE {name} {kind}\n")
    for labels, value in samples:
        pairs = ",".join(f'{key}="{_escape(val)}"' for key, val in labels.items())
        out.append(f"{name}{{{pairs}}} {value}\n" if pairs else f"{name} {value}\n")


def _escape(value: str) -> str:
    """A label value as the text format wants it: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class MetricsFile:
    def __init__(self, path: str):
        self.path = path
        self.written: int | None = None  # the hash of the text last written

    def update(self, ham) -> None:
        """After a save of ham (hamtools.hamd.daemon.Ham): write the file if it changed."""
        text = render(ham.model.entities.values(), started=ham.started, ham_failures=ham.ham_failures,
                      watchdog=ham.watchdog.status() if ham.watchdog is not None else None)
        if hash(text) == self.written:
            return
        try:
            # No fsync: the collector reads the page cache, and a crash that loses the latest
            # figures loses nothing ham needs (its state file is the durable record).
            write_atomic(self.path, text.encode(), 0o644, durable=False)
        except OSError as err:
            ham.log(0, f"cannot write metrics to {self.path}: {err.strerror}")
            return
        self.written = hash(text)

"""ham's persisted state: the whole model plus ham's own counters, one JSON document with a
schema version, replaced atomically. Never on the death -> respawn path: changes only mark it
dirty, and the write happens a moment later, coalesced.

A file that does not parse (ours are never torn, being replaced whole, but disks and people
happen) is reported, kept aside as state.json.corrupt for inspection, and what can be trusted
is salvaged: each entity that reads whole, in order, up to the first that does not, and ham's
counters if they read. Temporary files of a write that a kill interrupted are removed.
"""

from hamtools.core import cjson
import os

from hamtools.core.atomic import read_or_none, write_atomic
from hamtools.hamd.model import SCHEMA, Model


class Store:
    def __init__(self, path: str):
        self.path = path
        self.saved: set[str] = set()  # the entities the file on disk has

    def load(self) -> tuple[Model, dict, str | None]:
        """(model, ham's counters, a problem to report or None)."""
        self._remove_interrupted_writes()
        raw = read_or_none(self.path)
        if raw is None:
            return Model(), {}, None
        try:
            data = cjson.loads(raw)
            model = Model.from_dict(data["model"])
            meta = data.get("ham", {})
            if not isinstance(meta, dict):
                raise ValueError("ham counters are not an object")
            return model, meta, None
        except (ValueError, KeyError, TypeError, AttributeError) as bad:
            aside = self.path + ".corrupt"
            os.replace(self.path, aside)
            model, meta, lost = salvage(raw)
            kept = len(model.entities) - 1
            return model, meta, (f"state file {self.path} is unreadable ({bad}); kept as {aside}; "
                                 f"starting with the {kept} entities that read whole"
                                 + (f" ({lost} did not)" if lost else ""))

    def _remove_interrupted_writes(self) -> None:
        directory, name = os.path.split(self.path)
        prefix = f".{name}."
        for leftover in os.listdir(directory or "."):
            if leftover.startswith(prefix) and leftover.endswith(".tmp"):
                try:
                    os.unlink(os.path.join(directory, leftover))
                except OSError:
                    pass

    def save(self, model: Model, meta: dict) -> None:
        entities = cjson.dumps_with_list({"schema": SCHEMA}, "entities", (e.to_dict() for e in model.entities.values()))
        data = f'{{"model":{entities},"ham":{cjson.dumps(meta)}}}'
        write_atomic(self.path, data.encode(), 0o600)
        self.saved = set(model.entities)


def salvage(raw: bytes) -> tuple[Model, dict, int]:
    """What can be trusted of a state file that does not parse: (model, counters, entities
    lost). Entities are read one by one from the start of the list; the first that does not
    read whole ends it (what follows a tear is gone)."""
    from hamtools.hamd.model import Entity

    model, meta, lost = Model(), {}, 0
    text = raw.decode("utf-8", errors="replace")
    marker = text.find('"entities":[')
    at = marker + len('"entities":[') if marker >= 0 else len(text)
    if f'"schema":{SCHEMA}' not in text[:max(marker, 0)]:
        at = len(text)  # another schema's entities are not ours to read
    while at < len(text):
        try:
            data, at = cjson.scan(text, at)
        except ValueError:
            lost += 1  # torn here
            break
        try:
            entity = Entity.from_dict(data)
            model.entities[entity.name] = entity
        except (ValueError, KeyError, TypeError, AttributeError):
            lost += 1
        while at < len(text) and text[at] in ", \n":
            at += 1
        if at < len(text) and text[at] == "]":
            break
    marker = text.rfind('"ham":{')
    if marker >= 0:
        try:
            found, _ = cjson.scan(text, marker + len('"ham":'))
            meta = found if isinstance(found, dict) else {}
        except ValueError:
            pass
    if model.global_entity.kind != "global":
        model = Model()
    return model, meta, lost

"""ham's persisted state: the whole model plus ham's own counters, one JSON document with a
schema version, replaced atomically. Never on the death -> respawn path: changes only mark it
dirty, and the write happens a moment later, coalesced.

A torn or corrupt file (it cannot be torn by us, but disks and people happen) is reported,
kept aside as state.json.corrupt for inspection, and ham starts with an empty model.
"""

from hamtools.core import cjson
import os

from hamtools.core.atomic import read_or_none, write_atomic
from hamtools.hamd.model import SCHEMA, Model


class Store:
    def __init__(self, path: str):
        self.path = path

    def load(self) -> tuple[Model, dict, str | None]:
        """(model, ham's counters, a problem to report or None)."""
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
            return Model(), {}, f"state file {self.path} is unreadable ({bad}); kept as {aside}, starting empty"

    def save(self, model: Model, meta: dict) -> None:
        # Entity by entity: building the whole tree as one dict first would leave its peak in
        # ham's heap for good (the resident size is budgeted).
        entities = ",".join(cjson.dumps(e.to_dict()) for e in model.entities.values())
        data = (f'{{"model":{{"schema":{SCHEMA},"entities":[{entities}]}},'
                f'"ham":{cjson.dumps(meta)}}}')
        write_atomic(self.path, data.encode(), 0o600)

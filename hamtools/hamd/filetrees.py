"""What configuration files build besides services: conditions on the global entity and
placeholders (QNX's ham_entity), put into the tree at boot and kept in step by reloads.

Only what a file made is touched. Each such condition and placeholder keeps the file's entry
(`config`), so a reload adds what is new, removes what went, rebuilds what changed and
leaves the rest alone (with their counters); what the API made is never touched, and a name
the API holds is refused (check) before anything changes. A placeholder that a process has
filled (an attach) is a live entity: reloads leave it alone.
"""

from hamtools.hamd.model import Entity, Model

GLOBAL_KIND, PLACEHOLDER = "global", "placeholder"


def check(model: Model, trees: list[dict]) -> None:
    """ValueError (FILE:LINE: message) if a file's name is held by what the API made."""
    for tree in trees:
        if tree["kind"] == GLOBAL_KIND:
            held = model.global_entity.conditions
            for cond in tree["conditions"]:
                if cond["name"] in held and held[cond["name"]].config is None:
                    raise ValueError(f"{cond['source']}: global condition {cond['name']!r}: a condition of "
                                     "that name already exists (made through the API or hamctl)")
            continue
        other = model.entities.get(tree["name"])
        if other is not None and other.config is None:
            raise ValueError(f"{tree['source']}: placeholder {tree['name']!r}: an entity of that name "
                             "already exists (made through the API or hamctl)")


def apply(ham, trees: list[dict]) -> None:
    """Make the file-made part of the tree match trees (already checked)."""
    model = ham.model
    conditions = next((t["conditions"] for t in trees if t["kind"] == GLOBAL_KIND), [])
    _apply_global(ham, {cond["name"]: cond for cond in conditions})
    wanted = {t["name"]: t for t in trees if t["kind"] == PLACEHOLDER}
    for entity in [e for e in model.entities.values() if e.config is not None]:
        if entity.kind != PLACEHOLDER:  # filled by an attach: a live entity
            if entity.name not in wanted:
                entity.config = None  # the files let go of it: it is the API's now
            continue
        if _differs(entity.config, wanted.get(entity.name)):
            ham.engine.remove_entity(entity, why="removed from the configuration")
    for name, tree in wanted.items():
        if name in model.entities:
            continue  # unchanged, or filled
        entity = Entity(name, PLACEHOLDER, flags=tree["flags"], run="stopped", created=ham.clock.time())
        entity.config = tree
        model.add_entity(entity)
        for cond in tree["conditions"]:
            ham.requests.add_tree(entity, cond)
    ham.changed()


def _apply_global(ham, wanted: dict[str, dict]) -> None:
    entity = ham.model.global_entity
    for name, cond in list(entity.conditions.items()):
        if cond.config is not None and _differs(cond.config, wanted.get(name)):
            for action in cond.actions.values():
                action.removed = True  # a job holding it skips it
            del entity.conditions[name]
    for name, tree in wanted.items():
        if name not in entity.conditions:
            ham.requests.add_tree(entity, tree)
            entity.conditions[name].config = tree


def _differs(made: dict, wanted: dict | None) -> bool:
    return wanted is None or _sans_source(made) != _sans_source(wanted)


def _sans_source(entry: dict) -> dict:
    return {key: value for key, value in entry.items() if key != "source"}

"""The HAM tree with no I/O: QNX's rules for what may be added where, matching, limits."""

import errno

import pytest

from hamtools.core import hamconsts as q
from hamtools.hamd.model import (
    MAX_ACTIONS, MAX_CONDITIONS, MAX_FAILS, Action, Condition, Entity, FailAction, HamError, Model,
    check_params,
)


def tree():
    model = Model()
    entity = model.add_entity(Entity("db"))
    cond = model.add_condition(entity, Condition("death", q.CONDDEATH))
    return model, entity, cond


def log_action(name: str) -> Action:
    return Action(name, "log", {"message": "m", "verbosity": 0, "prefix": 0})


def refused(err: int, call, *args):
    with pytest.raises(HamError) as caught:
        call(*args)
    assert caught.value.errno == err
    return caught.value


@pytest.mark.parametrize("spec, flags, old, new, fires", [
    (0, 0, 1, 2, True),  # CONDSTATEANY
    (2, 0, 1, 2, True), (3, 0, 1, 2, False),  # a value
    (0b1100, q.HCONDSTATETOSET, 1, 2, True), (0b1100, q.HCONDSTATETOSET, 1, 4, False),  # a bitmask
    (0b0100, q.HCONDSTATETOSET | q.HCONDSTATETOINV, 1, 2, False),  # inverted: anything but 2
    (0b0100, q.HCONDSTATETOSET | q.HCONDSTATETOINV, 1, 3, True),
    (2, q.HCONDSTATETOINV, 1, 2, False), (2, q.HCONDSTATETOINV, 1, 5, True),  # a value inverted
    (1 << 31, q.HCONDSTATETOSET, 0, 31, True), (1 << 31, q.HCONDSTATETOSET, 0, 32, False),
])
def test_to_state_matching(spec, flags, old, new, fires):
    cond = Condition("s", q.CONDSTATE, flags, params={"from": 0, "to": spec})
    assert cond.matches_state(old, new) is fires


@pytest.mark.parametrize("spec, flags, old, fires", [
    (0b10, q.HCONDSTATEFROMSET, 1, True), (0b10, q.HCONDSTATEFROMSET, 0, False),
    (0b10, q.HCONDSTATEFROMSET | q.HCONDSTATEFROMINV, 0, True), (1, q.HCONDSTATEFROMINV, 1, False),
])
def test_from_state_matching(spec, flags, old, fires):
    cond = Condition("s", q.CONDSTATE, flags, params={"from": spec, "to": 0})
    assert cond.matches_state(old, 9) is fires


def test_raise_matching_takes_zero_as_any():
    cond = Condition("r", q.CONDRAISE, params={"rtype": 3, "rclass": 0, "rseverity": 7})
    assert cond.matches_raise(3, 99, 7) and not cond.matches_raise(3, 1, 6) and not cond.matches_raise(4, 1, 7)


def test_restart_only_once_and_only_in_death_conditions():
    model, entity, death = tree()
    model.add_action(entity, death, Action("r", "restart", {"line": "/bin/true"}))
    refused(errno.EEXIST, model.add_action, entity, death, Action("r2", "restart", {"line": "/bin/true"}))
    state = model.add_condition(entity, Condition("st", q.CONDSTATE))
    refused(errno.EINVAL, model.add_action, entity, state, Action("r3", "restart", {"line": "/bin/true"}))
    nowait = model.add_condition(entity, Condition("nw", q.CONDDEATH, q.HCONDNOWAIT))
    refused(errno.EINVAL, model.add_action, entity, nowait, Action("w", "waitfor", {"delay": 5}))
    refused(errno.EINVAL, model.add_fail, Action("x", "log"), FailAction("f", "restart", {"line": "/bin/true"}))


def test_names_and_paths_are_bounded():
    model = Model()
    refused(errno.EINVAL, model.add_entity, Entity("a/b"))
    refused(errno.ENAMETOOLONG, model.add_entity, Entity("x" * q._POSIX_PATH_MAX))
    entity = model.add_entity(Entity("e" * 200))
    refused(errno.ENAMETOOLONG, model.add_condition, entity, Condition("c" * 100, q.CONDDEATH))


def test_room_in_the_tree_is_bounded():
    model, entity, cond = tree()
    for n in range(MAX_CONDITIONS - 1):
        model.add_condition(entity, Condition(f"c{n}", q.CONDSTATE))
    assert "full" not in entity.conditions
    refused(errno.ENOMEM, model.add_condition, entity, Condition("full", q.CONDSTATE))
    for n in range(MAX_ACTIONS):
        model.add_action(entity, cond, log_action(f"a{n}"))
    refused(errno.ENOMEM, model.add_action, entity, cond, log_action("full"))
    action = cond.actions["a0"]
    for n in range(MAX_FAILS):
        model.add_fail(action, FailAction(f"f{n}", "log", {"message": "m", "verbosity": 0, "prefix": 0}))
    refused(errno.ENOMEM, model.add_fail, action, FailAction("full", "log", {"message": "m", "verbosity": 0,
                                                                             "prefix": 0}))


def test_enable_recurses_only_with_hrecurse_and_flags_are_checked():
    model, entity, cond = tree()
    action = model.add_action(entity, cond, log_action("a"))
    model.control(entity, q.HDISABLE, 0)
    assert not entity.enabled and cond.enabled and action.enabled
    model.control(entity, q.HDISABLE, q.HRECURSE)
    assert not cond.enabled and not action.enabled
    model.control(entity, q.HENABLE, q.HRECURSE)
    assert entity.enabled and cond.enabled and action.enabled
    refused(errno.EINVAL, model.control, entity, q.HADDFLAGS, q.HCONDNOWAIT)
    model.control(cond, q.HADDFLAGS, q.HCONDKEEPONEMPTY)
    assert model.control(cond, q.HGETFLAGS, 0) == q.HCONDKEEPONEMPTY


def test_the_serialised_tree_round_trips():
    model, entity, cond = tree()
    model.add_action(entity, cond, Action("r", "restart", {"line": "/bin/true"}, q.HREARMAFTERRESTART))
    again = Model.from_dict(model.to_dict())
    assert again.to_dict() == model.to_dict()
    refused_schema = model.to_dict() | {"schema": 99}
    with pytest.raises(ValueError):
        Model.from_dict(refused_schema)


@pytest.mark.parametrize("kind,params", [
    # Found by the fuzzer: JSON integers have no bound and NaN/Infinity parse; an OverflowError
    # in a timer or syscall later (or NaN in the timer heap) would be ham's, not the caller's.
    ("waitfor", {"delay": 10**400}),
    ("execute", {"line": "/bin/true", "timeout": float("nan")}),
    ("execute", {"line": "/bin/true", "timeout": float("inf")}),
    ("notify_signal", {"pid": 2**63, "signum": 9, "code": 0, "value": 0}),
    ("log", {"message": "x", "verbosity": -2**64, "prefix": 0}),
])
def test_action_numbers_are_bounded_and_finite(kind, params):
    with pytest.raises(HamError) as raised:
        check_params(kind, params)
    assert raised.value.errno == errno.EINVAL

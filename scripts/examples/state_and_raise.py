#!/usr/bin/env python3
"""Seed 002 §§2.4-2.5: mediaware publishes a state transition (OK -> POK: audio chip broken)
and raised events (type 1 = channel fault, class 2 = channel 2); usbapp subscribes with
notify pulses and reacts.

    scripts/examples/state_and_raise.py mediaware    (reads "state N" / "raise T C S" lines)
    scripts/examples/state_and_raise.py usbapp       (prints what it is told)
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from hamtools.ham import *  # noqa: E402,F403
from hamtools.neutrino import ChannelCreate, MsgReceivePulse  # noqa: E402

STA_OK, STA_POK = 1, 2  # the seed's own state values (ham.h defines none)
PCODEPOK, PCODECHANNEL = 10, 11


def mediaware():
    ham_attach_self("mediaware", 0, 0, 0, 0)
    ham_connect(0)
    ehdl = ham_entity_handle(ND_LOCAL_NODE, "mediaware", 0)
    ham_entity_condition_state(ehdl, STA_OK, 0)
    print("mediaware: OK", flush=True)
    for line in sys.stdin:
        words = line.split()
        if words[:1] == ["state"]:
            ham_entity_condition_state(ehdl, int(words[1]), 0)
        elif words[:1] == ["raise"]:
            ham_entity_condition_raise(ehdl, int(words[1]), int(words[2]), int(words[3]), 0)
        print("mediaware: published", " ".join(words), flush=True)
    ham_entity_handle_free(ehdl)


def usbapp():
    chid = ChannelCreate(0)
    ham_connect(0)
    ehdl = ham_entity_handle(ND_LOCAL_NODE, "mediaware", 0)
    chdl = ham_condition_state(ehdl, "processpok", STA_OK, STA_POK, 0)
    ham_action_notify_pulse(chdl, "notify pok", ND_LOCAL_NODE, os.getpid(), chid, PCODEPOK, 0, HREARMAFTERRESTART)
    chdl = ham_condition_raise(ehdl, "channel2", 1, 2, CONDRAISESEVERITYANY, 0)
    ham_action_notify_pulse(chdl, "notify channel", ND_LOCAL_NODE, os.getpid(), chid, PCODECHANNEL, 0, HREARMAFTERRESTART)
    ham_disconnect(0)
    print("usbapp: subscribed", flush=True)
    while True:
        pulse = MsgReceivePulse(chid)
        if pulse.code == PCODEPOK:
            print("usbapp: mediaware went OK -> POK: audio playback disabled, telling the user", flush=True)
        elif pulse.code == PCODECHANNEL:
            print("usbapp: mediaware raised a fault on channel 2", flush=True)


if __name__ == "__main__":
    {"mediaware": mediaware, "usbapp": usbapp}[sys.argv[1]]()

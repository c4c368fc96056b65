#!/usr/bin/env python3
"""Seed 002 §8.3, the client that receives death/detach/restart pulses and a death signal,
with the delayed vs HCONDINDEPENDENT notification. It is `hamtools pulsedemo listen`:

    scripts/examples/client.py [--inetd NAME] [--nfs NAME] [--delay MS]
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from hamtools.multicall import run_applet  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_applet("pulsedemo", ["listen", *sys.argv[1:]]))

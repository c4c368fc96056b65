"""hamtools: the QNX High Availability Manager and the classic watchdog tools for Linux.

Imports nothing on purpose: every applet's startup cost starts here.
"""

__version__ = "0.1.0"

"""The core library the applets share (processes, event loop, clock, files, devices)."""

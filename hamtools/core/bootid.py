"""This boot's identity (the kernel's random boot id): times on CLOCK_MONOTONIC, and records
a reset should outlive, mean something only together with the boot they were taken in."""

BOOT_ID = "/proc/sys/kernel/random/boot_id"


def boot_id() -> str:
    try:
        with open(BOOT_ID) as source:
            return source.read().strip()
    except OSError:
        return ""

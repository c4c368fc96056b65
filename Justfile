# hamtools tasks (each is a thin wrapper over scripts/, which work without just).

# build bin/hamtools (--arch aarch64: bin/hamtools-aarch64)
build *ARGS:
    scripts/build {{ARGS}}

# run the whole test suite
test *ARGS:
    scripts/test {{ARGS}}

# the main job: ham supervising a demo
demo:
    scripts/demo

# startup-time benchmark (ratios against the bare interpreter)
bench-startup:
    scripts/bench_startup

# every performance figure in one run (--short: a quick check that every part runs)
bench *ARGS:
    scripts/bench {{ARGS}}

# the long fuzz run (tests/test_fuzz.py is CI's short one)
fuzz MINUTES="30":
    scripts/fuzz --minutes {{MINUTES}}

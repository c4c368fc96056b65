"""Run a real ham whose configuration is a JSON file of ready-made specs (the contract's
canonical dicts), so the service manager is tested without the config parsers.

    python tests/services_runner.py RUNTIME_DIR SPECS.json
"""
import json
import sys

from hamtools.core.loop import Loop
from hamtools.hamd.daemon import Ham
from hamtools.hamd.hlog import HamLog


def main(runtime_dir: str, path: str) -> int:
    loop = Loop()
    ham = Ham(loop, runtime_dir, HamLog(loop.clock, verbosity=4, path=f"{runtime_dir}/ham.log"))

    def load():
        with open(path) as source:
            data = json.load(source)
        return data["specs"], data.get("groups", {})

    ham._load_config = load
    ham.start([path])
    try:
        loop.run()
    finally:
        ham.close()
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

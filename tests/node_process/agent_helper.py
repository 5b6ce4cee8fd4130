"""A stand-in for the node agent, run as its own process by the re-attach tests.

Usage: agent_helper.py STATE_DIR IMAGE_ARCHIVE. It starts workloads through a
ProcessRuntime, prints their pids as one JSON line, then waits to be SIGKILLed.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from node.runtime.base import ContainerSpec, ContainerState
from node.runtime.process import ProcessRuntime


def _spec(name: str, *command: str) -> ContainerSpec:
    return ContainerSpec(
        name=name, workload_id=f"acme/app/{name}", image="local/busybox:1", command=command
    )


def main() -> None:
    state_dir, archive = Path(sys.argv[1]), Path(sys.argv[2])
    rt = ProcessRuntime("node-agent", state_dir)
    rt.image_import([archive.read_bytes()])
    rt.create(_spec("keep", "sh", "-c", "echo started; while :; do sleep 0.05; done"))
    rt.create(_spec("victim", "sleep", "1000"))
    rt.create(_spec("job", "sh", "-c", "exit 3"))
    rt.create(_spec("idle", "sleep", "1000"))
    pids = {name: rt.start(name).pid for name in ("keep", "victim")}
    rt.start("job")
    deadline = time.monotonic() + 10
    while rt.inspect("job").state is not ContainerState.EXITED:
        if time.monotonic() > deadline:
            raise SystemExit("job did not exit")
        time.sleep(0.02)
    print(json.dumps(pids), flush=True)
    while True:  # the test kills us with SIGKILL: no cleanup runs
        time.sleep(60)


if __name__ == "__main__":
    main()

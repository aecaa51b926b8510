"""Run the healthchecks of a compose project's containers, as podman's timers would.

Podman schedules a container's healthcheck with a systemd timer; without systemd as PID 1 (as
on these machines) nothing runs it and a `condition: service_healthy` waits forever. This loop
runs `podman healthcheck run` for every running container of the project that has a check:
every 2 s until the container is healthy, then at the check's own interval.

    python3 healthchecks.py PROJECT    # until killed
"""

import json
import subprocess
import sys
import time

UNTIL_HEALTHY = 2.0


def containers(project: str) -> list[dict]:
    ids = subprocess.run(
        ["podman", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}"],
        capture_output=True,
        text=True,
    ).stdout.split()
    if not ids:
        return []
    found = subprocess.run(["podman", "inspect", *ids], capture_output=True, text=True).stdout
    return json.loads(found or "[]")


def main(project: str) -> None:
    last_run: dict[str, float] = {}
    running: dict[str, subprocess.Popen] = {}
    while True:
        for container in containers(project):
            if container["Id"] in running and running[container["Id"]].poll() is None:
                continue  # the last check still runs
            check = container["Config"].get("Healthcheck") or {}
            if not check.get("Test") or check["Test"][0] == "NONE":
                continue
            health = container["State"].get("Health") or container["State"].get("Healthcheck")
            healthy = (health or {}).get("Status") == "healthy"
            interval = check.get("Interval", 30e9) / 1e9 if healthy else UNTIL_HEALTHY
            if time.monotonic() - last_run.get(container["Id"], 0) >= interval:
                last_run[container["Id"]] = time.monotonic()
                running[container["Id"]] = subprocess.Popen(
                    ["podman", "healthcheck", "run", container["Id"]],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
        time.sleep(1)


if __name__ == "__main__":
    main(sys.argv[1])

"""Several processes as one run: ``jax.distributed`` set up, the same config on every
host, and a failure on one host stopping all of them with its reason.

JAX's coordination service (process 0) holds a small key-value store; the processes use
it to compare configs before training and to leave the reason when one of them fails.
A host whose peer has died sees only "connection closed" from the collective it was in;
it reads the peer's reason from the store and says that instead.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import jax

from suite.errors import ConfigError

PREFIX = "perceiver-suite"
WAIT_MS = 120_000


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
    """``jax.distributed.initialize`` from explicit values or the environment
    (``PERCEIVER_SUITE_COORDINATOR``/``_NUM_PROCESSES``/``_PROCESS_ID``, else JAX's own
    detection on SLURM and Cloud TPU). Returns whether several processes take part."""
    coordinator = coordinator or os.environ.get("PERCEIVER_SUITE_COORDINATOR")
    if num_processes is None and os.environ.get("PERCEIVER_SUITE_NUM_PROCESSES"):
        num_processes = int(os.environ["PERCEIVER_SUITE_NUM_PROCESSES"])
    if process_id is None and os.environ.get("PERCEIVER_SUITE_PROCESS_ID"):
        process_id = int(os.environ["PERCEIVER_SUITE_PROCESS_ID"])
    check_processes(num_processes, process_id)
    auto = "SLURM_JOB_ID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1 \
        or "TPU_WORKER_HOSTNAMES" in os.environ
    if coordinator is None and not auto:
        return False
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)
    return jax.process_count() > 1


def check_processes(num_processes: int | None, process_id: int | None) -> None:
    """A process count of at least one, and this process's index among them: JAX would
    otherwise wait for peers that never come, or fail deep in its start-up."""
    if num_processes is not None and num_processes < 1:
        raise ConfigError(f"--num-processes {num_processes}: must be at least 1")
    if process_id is not None and (process_id < 0 or (num_processes is not None
                                                      and process_id >= num_processes)):
        span = f"0..{num_processes - 1}" if num_processes is not None else ">= 0"
        raise ConfigError(f"--process-id {process_id}: must be {span} (an index among "
                          "--num-processes)")


def _client() -> Any:
    from jax._src import distributed

    return distributed.global_state.client


def agree(flat_config: dict[str, Any], run: str) -> None:
    """Every process must train the same config: a ConfigError on all of them naming the
    first key where one differs from process 0 (otherwise they would deadlock later)."""
    if jax.process_count() == 1:
        return
    client, me = _client(), jax.process_index()
    client.key_value_set(f"{PREFIX}/config/{run}/{me}", json.dumps(flat_config, default=str))
    for other in range(jax.process_count()):
        theirs = json.loads(client.blocking_key_value_get(f"{PREFIX}/config/{run}/{other}",
                                                          WAIT_MS))
        for key in sorted(set(theirs) | set(flat_config)):
            mine = json.loads(json.dumps(flat_config.get(key), default=str))
            if theirs.get(key) != mine:  # worded alike on every process, lower id first
                value = {me: mine, other: theirs.get(key)}
                a, b = sorted((me, other))
                raise ConfigError(f"process {b}'s config differs from process {a}'s: "
                                  f"{key}={value[a]!r} vs {value[b]!r}")


def fail(reason: str, code: int) -> None:
    """End this process of a multi-process run now: leave the reason for the others
    (a peer's if one failed first), print it, and exit without waiting for the others
    at JAX's shutdown barrier, which they will never reach."""
    client, me = _client(), jax.process_index()
    first = peer_failure()
    if first is None:
        try:
            client.key_value_set(f"{PREFIX}/failed/{me}", reason)
        except Exception:  # noqa: BLE001  the coordinator itself may be gone
            pass
        message = f"perceiver-suite: process {me}: {reason}"
    else:
        message = f"perceiver-suite: process {me} stopped: {first}"
    print(message, file=sys.stderr, flush=True)
    sys.stdout.flush()
    _leave(client, me)
    os._exit(code)


def _leave(client: Any, me: int, wait_s: float = 5.0) -> None:
    """Process 0 hosts the coordination service: a peer that finds it gone aborts, so
    process 0 leaves last, once the others have said they are leaving (or after wait_s:
    a dead peer says nothing)."""
    try:
        if me != 0:
            client.key_value_set(f"{PREFIX}/left/{me}", "1")
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if len(client.key_value_dir_get(f"{PREFIX}/left/")) >= jax.process_count() - 1:
                return
            time.sleep(0.05)
    except Exception:  # noqa: BLE001  the coordinator may already be gone
        pass


def peer_failure() -> str | None:
    """The reason another process left, if one has."""
    try:
        found = _client().key_value_dir_get(f"{PREFIX}/failed/")
    except Exception:  # noqa: BLE001
        return None
    for key, reason in found:
        return f"process {key.rsplit('/', 1)[-1]} failed: {reason}"
    return None

"""Run a function on N local ranks (gloo on CPU) without torchrun: what the tests use, and handy for trying a
distributed setting on a laptop. Each rank gets RANK/WORLD_SIZE/LOCAL_RANK in its environment and an initialised
default process group (FileStore rendezvous); a rank that raises or hangs fails the whole call with its traceback."""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import traceback
from collections.abc import Callable
from typing import Any

__all__ = ["free_port", "spawn"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, fn: Callable, world_size: int, store: str, backend: str, threads: int, timeout_s: float,
           args: tuple, errors: Any) -> None:
    import datetime
    import faulthandler

    import torch
    import torch.distributed as dist

    faulthandler.enable()  # a rank killed by a signal (e.g. an abort in C++) still shows where it was
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world_size))
    torch.set_num_threads(threads)
    # a FileStore rendezvous: no TCP port to pick (a port found free can be taken by another process before the
    # store binds it); gloo's own connections use ports the OS assigns
    dist.init_process_group(backend, init_method=f"file://{store}", rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=timeout_s))
    ok = False
    try:
        fn(rank, world_size, *args)
        ok = True
    except BaseException:  # noqa: BLE001 — any failure of a rank is reported to the parent, then the rank exits 1
        errors.put((rank, traceback.format_exc()))
        traceback.print_exc()
    finally:
        try:
            dist.destroy_process_group()
        finally:
            # skip interpreter finalisation: with torch 2.13 a gloo rank occasionally aborts there ("terminate
            # called without an active exception", no Python frame) after all its work is done
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0 if ok else 1)


def spawn(fn: Callable[..., None], world_size: int, *args: Any, backend: str = "gloo", threads: int = 1,
          timeout_s: float = 120.0) -> None:
    """Run fn(rank, world_size, *args) on `world_size` spawned processes with a default process group.

    fn must be importable by name (a module-level function). Results go through files or queues passed in args.
    timeout_s bounds every collective (a rank that waits longer raises) and the whole run; on failure the first
    failing rank's traceback is raised here as RuntimeError."""
    import time

    import torch.multiprocessing as mp

    if not isinstance(world_size, int) or isinstance(world_size, bool) or world_size < 1:
        raise ValueError(f"world_size must be an int >= 1, got {world_size!r}")
    ctx = mp.get_context("spawn")
    errors = ctx.SimpleQueue()
    fd, store = tempfile.mkstemp(prefix="pyunlearn_spawn_")
    os.close(fd)
    os.unlink(store)  # FileStore creates it; a stale file from an earlier group would confuse the rendezvous
    procs = [ctx.Process(target=_entry, args=(r, fn, world_size, store, backend, threads, timeout_s, args, errors))
             for r in range(world_size)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout_s
    failed = None
    # poll: a rank that fails stops the others at once (they would wait in a collective until the timeout)
    while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
        if any(p.exitcode not in (None, 0) for p in procs):
            break
        time.sleep(0.05)
    for r, p in enumerate(procs):
        if p.exitcode not in (None, 0) and failed is None:
            failed = f"rank {r} exited with code {p.exitcode}"
    for r, p in enumerate(procs):
        if p.is_alive():
            p.kill()
            p.join()
            failed = failed or f"rank {r} did not finish within {timeout_s} s"
    if os.path.exists(store):
        os.unlink(store)
    if failed is not None:
        details = []
        while not errors.empty():
            rank, tb = errors.get()
            details.append(f"--- rank {rank} ---\n{tb}")
        raise RuntimeError(failed + ("\n" + "\n".join(details) if details else ""))

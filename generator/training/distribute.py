"""tf.distribute in one place: the strategy by name, who the chief is, what workers tell each other.

Strategies (``--strategy``):

    default       one device: the first GPU, else the CPU
    mirrored      every GPU of this machine (every logical CPU device when there is no GPU);
                  variables are mirrored and gradients summed over the devices every step
    multi-worker  MultiWorkerMirroredStrategy over the machines listed in TF_CONFIG, or over
                  the tasks of a Slurm job step (SlurmClusterResolver) when TF_CONFIG is unset
    auto          mirrored when more than one GPU is visible, else default

MultiWorkerMirroredStrategy must exist before TensorFlow runs its first operation, so a program
that may run multi-worker calls ``make_strategy("multi-worker")`` first; the strategy is created
once per process and reused.

TensorFlow's collective setup waits forever for a worker that never comes up. So before creating
the strategy, every worker checks with plain TCP connections that the addresses of all the others
(from TF_CONFIG or the Slurm job step) accept connections, holding its own port open meanwhile so
that the others can see it; a worker whose peers are not all reachable within the ``peer_timeout``
limit (300 s by default; ``--peer-timeout`` or ``GENERATOR_PEER_TIMEOUT``) stops with a
GeneratorError naming the unreachable addresses (exit status 2 on the command line).

Every worker of a multi-worker run runs the same command. The chief (task ``chief``, else
``worker`` 0) owns the run directory; the others write to temporary directories. Workers need not
share a file system: the chief sends its resume checkpoint to the others (``broadcast_bytes``),
and ``all_ok`` lets every worker stop together when one of them cannot go on.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np

from generator.errors import ArgumentError, GeneratorError

STRATEGIES = ("auto", "default", "mirrored", "multi-worker")
_multi_worker = None  # the process's MultiWorkerMirroredStrategy, once created


def make_strategy(name: str):
    """The tf.distribute strategy called ``name`` (one of ``STRATEGIES``)."""
    import tensorflow as tf

    if name == "multi-worker":
        return _multi_worker_strategy()
    if name == "auto":
        name = "mirrored" if len(tf.config.list_logical_devices("GPU")) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    raise GeneratorError(f"unknown strategy {name!r}: use {', '.join(STRATEGIES)}")


def _multi_worker_strategy():
    global _multi_worker
    if _multi_worker is None:
        import tensorflow as tf

        resolver = cluster_resolver()
        own, peers = cluster_addresses(resolver)
        wait_for_peers(own, peers)
        try:
            _multi_worker = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
        except RuntimeError as e:
            if "startup" not in str(e):
                raise
            raise GeneratorError(
                "the multi-worker strategy must be created before TensorFlow runs anything: "
                "call generator.training.distribute.make_strategy('multi-worker') at program start"
            ) from None
    return _multi_worker


def cluster_resolver():
    """The cluster from TF_CONFIG, else from the Slurm job step this process belongs to."""
    import tensorflow as tf

    resolvers = tf.distribute.cluster_resolver

    text = os.environ.get("TF_CONFIG", "")
    if text:
        try:
            config = json.loads(text)
            workers = config["cluster"].get("worker", []) + config["cluster"].get("chief", [])
            task_type, index = config["task"]["type"], int(config["task"]["index"])
        except (ValueError, KeyError, TypeError, AttributeError):
            raise GeneratorError(
                'TF_CONFIG must be JSON like {"cluster": {"worker": ["host1:port", '
                '"host2:port"]}, "task": {"type": "worker", "index": 0}}'
            ) from None
        if task_type not in ("chief", "worker") or not 0 <= index < len(config["cluster"].get(task_type, [])):
            raise GeneratorError(f"TF_CONFIG's task {task_type} {index} is not a chief or worker of its cluster")
        if len(workers) < 2:
            raise ArgumentError.sentence(
                "TF_CONFIG lists a single task; a one-machine run does not need strategy multi-worker", "strategy"
            )
        return resolvers.TFConfigClusterResolver()
    if "SLURM_PROCID" in os.environ:
        gpus = None if os.environ.get("CUDA_VISIBLE_DEVICES") or shutil.which("nvidia-smi") else 0
        port = int(os.environ.get("GENERATOR_SLURM_PORT", "8888"))
        try:
            return resolvers.SlurmClusterResolver(port_base=port, gpus_per_node=gpus)
        except (RuntimeError, KeyError) as e:
            raise GeneratorError(f"cannot read the Slurm job step: {e}") from None
    raise ArgumentError(
        "strategy", "multi-worker needs TF_CONFIG describing the cluster (or a Slurm job step started with srun)"
    )


def cluster_addresses(resolver) -> tuple[str | None, list[str]]:
    """This task's ``host:port`` and those of every other task of the resolver's cluster."""
    jobs = resolver.cluster_spec().as_dict()
    addresses = {}
    for job, tasks in jobs.items():
        for index, address in tasks.items() if isinstance(tasks, dict) else enumerate(tasks):
            addresses[(job, int(index))] = address
    own = addresses.get((resolver.task_type, int(resolver.task_id or 0)))
    return own, [a for key, a in sorted(addresses.items()) if a != own]


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "localhost", int(port)


def wait_for_peers(own: str | None, peers: list[str], timeout: float | None = None, poll: float = 0.5) -> None:
    """Return once every address in ``peers`` accepts a TCP connection; GeneratorError naming the
    ones that did not within ``timeout`` seconds (default: the ``peer_timeout`` limit; 0: no check).

    Meanwhile this worker listens on its own port (``own``), so that peers running the same check
    see it before TensorFlow's server takes the port over.
    """
    import socket
    import time

    from generator.data import limits

    timeout = limits.get("peer_timeout") if timeout is None else timeout
    if not timeout or not peers:
        return
    listener = None
    if own:
        try:
            listener = socket.socket(socket.AF_INET6 if ":" in _split_address(own)[0] else socket.AF_INET)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("", _split_address(own)[1]))
            listener.listen(64)
        except (OSError, ValueError):  # the port is taken or the address odd: TensorFlow will say so
            if listener is not None:
                listener.close()
            listener = None
    deadline = time.monotonic() + timeout
    unreached = list(peers)
    try:
        while True:
            for address in list(unreached):
                try:
                    host, port = _split_address(address)
                    left = max(0.05, min(2.0, deadline - time.monotonic()))
                    socket.create_connection((host, port), timeout=left).close()
                    unreached.remove(address)
                except (OSError, ValueError):
                    pass
            if not unreached:
                return
            if time.monotonic() >= deadline:
                raise GeneratorError(
                    f"cannot reach the other workers at {', '.join(unreached)} within {timeout:g} s; start them "
                    f"(every worker runs the same command), check TF_CONFIG's addresses, or "
                    f"{limits.how_to_raise('peer_timeout').replace('raise it', 'wait longer')}"
                )
            time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
    finally:
        if listener is not None:
            listener.close()


def is_chief(strategy) -> bool:
    """True for the one process that writes the run directory (always, outside multi-worker runs)."""
    resolver = strategy.cluster_resolver
    if resolver is None or resolver.task_type is None:
        return True
    jobs = resolver.cluster_spec().jobs
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in jobs
    )


def num_workers(strategy) -> int:
    return strategy.num_replicas_in_sync // local_replicas(strategy)


def worker_index(strategy) -> int:
    """This worker's place among ``num_workers(strategy)`` (0 for the chief and outside multi-worker runs)."""
    resolver = strategy.cluster_resolver
    if resolver is None or resolver.task_type is None or num_workers(strategy) == 1:
        return 0
    if "chief" in resolver.cluster_spec().jobs:
        return 0 if resolver.task_type == "chief" else 1 + int(resolver.task_id)
    return int(resolver.task_id)


def local_replicas(strategy) -> int:
    """Replicas of this worker (the default strategy has one and no ``worker_devices``)."""
    if strategy.cluster_resolver is None:
        return strategy.num_replicas_in_sync
    return len(strategy.extended.worker_devices)


def describe(strategy) -> str:
    """E.g. ``MirroredStrategy: 4 replicas`` or ``MultiWorkerMirroredStrategy: 2 workers x 1 replica``."""
    name = {
        "_DefaultDistributionStrategy": "default strategy",
        "CollectiveAllReduceStrategy": "MultiWorkerMirroredStrategy",
    }.get(type(strategy).__name__, type(strategy).__name__)
    workers, local = num_workers(strategy), local_replicas(strategy)
    plural = lambda n, word: f"{n} {word}" + ("s" if n != 1 else "")  # noqa: E731
    if workers > 1:
        return f"{name}: {plural(workers, 'worker')} x {plural(local, 'replica')}"
    return f"{name}: {plural(local, 'replica')}"


# -- what workers tell each other (no-ops outside multi-worker runs) -------------------------------


def _sum_over_workers(strategy, arrays: list[np.ndarray], chief_only: bool) -> list[np.ndarray]:
    """Sum float64 arrays over the workers, each worker counted once; with ``chief_only`` the others
    contribute zeros, which makes it a broadcast from the chief."""
    import tensorflow as tf

    local = local_replicas(strategy)
    send = not chief_only or is_chief(strategy)
    tensors = [tf.constant(a if send else np.zeros_like(a), tf.float64) for a in arrays]

    def replica_fn():
        ctx = tf.distribute.get_replica_context()
        first = tf.equal(ctx.replica_id_in_sync_group % local, 0)  # this worker's first replica
        return ctx.all_reduce(tf.distribute.ReduceOp.SUM, [tf.where(first, t, tf.zeros_like(t)) for t in tensors])

    results = tf.function(lambda: strategy.run(replica_fn))()
    return [np.asarray(strategy.experimental_local_results(r)[0]) for r in results]


def broadcast_bytes(strategy, data: bytes) -> bytes:
    """The chief's ``data`` on every worker (what the others pass is ignored)."""
    if num_workers(strategy) == 1:
        return data
    (size,) = _sum_over_workers(strategy, [np.array([len(data)], np.float64)], chief_only=True)
    size = int(size[0])
    if size == 0:
        return b""
    words = -(-size // 4)
    padded = data.ljust(words * 4, b"\0") if is_chief(strategy) else bytes(words * 4)
    (received,) = _sum_over_workers(strategy, [np.frombuffer(padded, "<u4").astype(np.float64)], chief_only=True)
    return received.astype("<u4").tobytes()[:size]


def broadcast_float(strategy, value: float) -> float:
    """The chief's ``value`` on every worker, so that all take the same decisions."""
    if num_workers(strategy) == 1:
        return value
    return float(_sum_over_workers(strategy, [np.array([value], np.float64)], chief_only=True)[0][0])


def sum_over_workers(strategy, values: list[float]) -> list[float]:
    """``values`` added up over the workers (unchanged outside multi-worker runs)."""
    if num_workers(strategy) == 1:
        return list(values)
    return [float(v) for v in _sum_over_workers(strategy, [np.array(values, np.float64)], chief_only=False)[0]]


def all_ok(strategy, ok: bool) -> bool:
    """True when ``ok`` is true on every worker."""
    if num_workers(strategy) == 1:
        return ok
    return _sum_over_workers(strategy, [np.array([0.0 if ok else 1.0])], chief_only=False)[0][0] == 0

"""Running a batch's work items on a Dask distributed cluster.

The client (:func:`monai_tumor.pipeline.batch.run_batch`) scans, plans and
reports as on one machine; :func:`run_items_on_dask` only replaces the local
runner: each :class:`~monai_tumor.pipeline.plan.WorkItem` becomes one Dask task
running :func:`~monai_tumor.pipeline.runner.run_work_item` on a worker, which
reads the series, segments it and writes its outputs (atomically, manifest
last) into the run's output folder, and returns its small
:class:`~monai_tumor.pipeline.records.SeriesRecord` to the client.

- **Storage**: workers open the export's files and write into the output
  folder at the same paths as the client, so both must be on a file system
  every worker mounts at the same place (NFS, Lustre, a shared volume). The
  SQLite index never leaves the client (SQLite on network file systems is
  unsafe): a work item lists its files itself.
- **The model** is loaded once per worker process, on its first task, by a
  worker plugin (:class:`SegmenterPlugin`) and reused; inference is one at a
  time per process (a lock), so a worker with several threads reads and writes
  other series while one is segmented, and torch uses the worker's threads
  (``dask worker --nthreads``) for that one inference: processes sharing a host
  do not oversubscribe its cores.
- **Faults**: a worker that dies mid-task (killed, out of memory, segfault)
  makes the scheduler run the task again on another worker; once workers have
  died ``allowed-failures + 1`` times on one series (the scheduler's
  ``distributed.scheduler.allowed-failures``) the series is ``failed`` with
  that reason and the rest go on. Series wait in the scheduler's queue until
  a worker thread is free, so a death counts only against the series running
  in that worker. ``attempts`` in the record counts the runs (1 = first try),
  ``worker`` names the worker that produced it.
- **Resources**: with ``worker_resources`` (``{"GPU": 1}``) every task asks for
  them, so only workers started with ``--resources GPU=1`` take inference.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from distributed.diagnostics.plugin import WorkerPlugin
from monai.data import MetaTensor

from monai_tumor.errors import BundleError, ConfigError
from monai_tumor.inference.bundle import BundleInfo, read_bundle_info
from monai_tumor.pipeline.infer import Segmenter, load_segmenter
from monai_tumor.pipeline.plan import RunContext, WorkItem
from monai_tumor.pipeline.records import SeriesRecord, SeriesStatus
from monai_tumor.pipeline.runner import failed_record, run_work_item

if TYPE_CHECKING:
    from distributed import Client, Future, Worker

    from monai_tumor.inference.seeds import Seed

__all__ = [
    "TASK_PREFIX",
    "DaskOptions",
    "SegmenterPlugin",
    "cluster_options",
    "parse_cluster",
    "parse_resources",
    "run_items_on_dask",
]

_log = logging.getLogger(__name__)

#: Seconds between checks that a local cluster still has workers.
_POLL_S = 30.0
#: Key prefix of the tasks (what the dashboard's task stream and progress bars show).
TASK_PREFIX = "monai-tumor-series"


@dataclass(frozen=True)
class DaskOptions:
    """Where and how to run a batch on Dask.

    Attributes
    ----------
    scheduler
        Address of a running scheduler (``tcp://host:8786``); ``None`` with
        ``local_workers`` to start a local cluster.
    local_workers
        Worker processes of a ``LocalCluster`` started for the run (and closed
        after it).
    threads_per_worker
        Threads of each local worker process (default: the host's cores shared
        out between the processes, at least 1); torch uses as many.
    worker_resources
        Resources every task requires (``{"GPU": 1.0}``); workers advertise
        theirs with ``dask worker --resources GPU=1``. A local cluster's workers
        get them too.
    allowed_failures
        Local cluster: how many times a worker may die while running one series
        before it is ``failed`` (so at most ``allowed_failures + 1`` attempts).
        A remote scheduler uses its own ``distributed.scheduler.allowed-failures``.
    dashboard_address
        Local cluster: where its dashboard listens (``":8787"``; ``None``: no dashboard).
    """

    scheduler: str | None = None
    local_workers: int | None = None
    threads_per_worker: int | None = None
    worker_resources: Mapping[str, float] = field(default_factory=dict)
    allowed_failures: int = 2
    dashboard_address: str | None = ":8787"

    def __post_init__(self) -> None:
        if (self.scheduler is None) == (self.local_workers is None):
            raise ConfigError(
                "give either a scheduler address (--scheduler tcp://HOST:PORT) or a local "
                "cluster (--cluster local:N), not both or neither"
            )
        if self.local_workers is not None and self.local_workers < 1:
            raise ConfigError(
                f"a local cluster needs at least one worker, got {self.local_workers}"
            )
        if self.allowed_failures < 0:
            raise ConfigError(f"allowed_failures must be >= 0, got {self.allowed_failures}")


def parse_cluster(spec: str) -> DaskOptions:
    """Options from ``local:N`` (a local cluster of N processes) or a scheduler address.

    Raises
    ------
    ConfigError
        ``spec`` is neither.
    """
    text = spec.strip()
    if text.startswith("local:"):
        count = text.removeprefix("local:")
        if not count.isdigit() or int(count) < 1:
            raise ConfigError(
                f"--cluster {spec!r}: expected local:N with N >= 1 worker processes "
                "(e.g. local:2), or a scheduler address tcp://HOST:PORT"
            )
        return DaskOptions(local_workers=int(count))
    if "://" in text:
        return DaskOptions(scheduler=text)
    raise ConfigError(
        f"--cluster {spec!r}: expected local:N (e.g. local:2) or a scheduler address "
        "tcp://HOST:PORT"
    )


def cluster_options(
    *,
    scheduler: str | None = None,
    cluster: str | None = None,
    worker_resources: str | None = None,
    allowed_failures: int = 2,
) -> DaskOptions:
    """Options from the command line's ``--scheduler``/``--cluster``/``--worker-resources``.

    Parameters
    ----------
    scheduler
        A scheduler address (``tcp://HOST:PORT``).
    cluster
        ``local:N``, or a scheduler address.
    worker_resources
        ``NAME=AMOUNT[,NAME=AMOUNT...]`` each task requires.
    allowed_failures
        Local cluster: worker deaths tolerated per series.

    Raises
    ------
    ConfigError
        Neither or both of ``scheduler`` and ``cluster``, or a malformed value.
    """
    if scheduler is not None and cluster is not None:
        raise ConfigError("give --scheduler or --cluster, not both")
    if scheduler is not None and "://" not in scheduler:
        raise ConfigError(f"--scheduler {scheduler!r}: expected an address tcp://HOST:PORT")
    spec = scheduler if scheduler is not None else cluster
    if spec is None:
        raise ConfigError(
            "--worker-resources needs a cluster: --scheduler tcp://HOST:PORT or --cluster local:N"
        )
    return replace(
        parse_cluster(spec),
        worker_resources=parse_resources(worker_resources or ""),
        allowed_failures=allowed_failures,
    )


def parse_resources(spec: str) -> dict[str, float]:
    """``"GPU=1,MEM=4e9"`` -> ``{"GPU": 1.0, "MEM": 4e9}`` (Dask worker resources).

    Raises
    ------
    ConfigError
        An entry is not ``NAME=NUMBER``.
    """
    resources: dict[str, float] = {}
    for part in spec.replace(" ", ",").split(","):
        if not part:
            continue
        name, sep, value = part.partition("=")
        try:
            amount = float(value)
        except ValueError:
            amount = -1.0
        if not sep or not name or amount <= 0:
            raise ConfigError(
                f"--worker-resources {spec!r}: expected NAME=AMOUNT entries separated by "
                "commas, e.g. GPU=1 (the same as `dask worker --resources`)"
            )
        resources[name] = amount
    return resources


class SegmenterPlugin(WorkerPlugin):
    """Worker plugin holding the model of one run, loaded once per worker process.

    Registered by the client on every worker (and on workers joining later).
    The model is loaded on the first task, not at registration, so loading
    happens in a task thread rather than on the worker's event loop, and only
    on workers that receive work. :meth:`segment` runs one inference at a time
    per process with torch using the worker's thread count.

    Parameters
    ----------
    bundle
        The bundle (its folder must be readable at the same path on the worker).
    device
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (chosen on the worker).
    segmenter
        A ready model to ship instead of loading the bundle (pickled once per
        worker); tests use it for stand-ins.
    """

    idempotent = False

    def __init__(
        self, bundle: BundleInfo, *, device: str = "auto", segmenter: Segmenter | None = None
    ) -> None:
        self.bundle = bundle
        self.device = device
        self._given = segmenter
        self._model: Segmenter | None = None
        self._lock: threading.Lock | None = None

    def __getstate__(self) -> dict[str, Any]:
        # A loaded model and a lock stay in their process.
        return {"bundle": self.bundle, "device": self.device, "_given": self._given}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _model=None, _lock=None)

    def setup(self, worker: Worker) -> None:
        """Give torch the worker's threads (called by Dask when the plugin is registered)."""
        import torch

        self._lock = threading.Lock()
        torch.set_num_threads(max(1, worker.state.nthreads))

    def teardown(self, worker: Worker) -> None:
        """Drop the model (called by Dask when the plugin is removed)."""
        self._model = None

    def segment(self, image: MetaTensor, *, seeds: Sequence[Seed] = ()) -> MetaTensor:
        """Segment with the worker's model (loaded on first use), one inference at a time."""
        if self._lock is None:  # used outside a worker (setup not called)
            self._lock = threading.Lock()
        with self._lock:
            if self._model is None:
                # the worker's threads (set in setup), not every CPU of the host
                self._model = self._given or load_segmenter(
                    self._same_bundle_here(), device=self.device, num_threads=None
                )
            return self._model.segment(image, seeds=seeds)

    def _same_bundle_here(self) -> BundleInfo:
        """Read the worker's own copy of the bundle and check it against the client's.

        The outputs' cache key and provenance name the client's weights and configs; a
        worker whose copy differs would write another model's masks under them.

        Raises
        ------
        BundleError
            If the worker's weights or configs differ from the client's.
        """
        here = read_bundle_info(self.bundle.root)
        if (here.weights_sha256, here.configs_sha256) != (
            self.bundle.weights_sha256,
            self.bundle.configs_sha256,
        ):
            raise BundleError(
                f"{self.bundle.name}: this worker's copy of the bundle differs from the "
                f"client's (weights sha256 {here.weights_sha256[:12]} against "
                f"{self.bundle.weights_sha256[:12]}, configs {here.configs_sha256[:12]} "
                f"against {self.bundle.configs_sha256[:12]}); give every worker the same bundle",
                path=self.bundle.root,
            )
        return here


def _run_on_worker(item: WorkItem, context: RunContext, plugin_name: str) -> SeriesRecord:
    """Run one item with this worker's model (the task); name the worker in the record."""
    from distributed import get_worker

    worker = get_worker()
    plugin: SegmenterPlugin = worker.plugins[plugin_name]  # type: ignore[assignment]
    record = run_work_item(item, context, plugin)
    return replace(record, worker=str(worker.address))


def _submit_series(
    client: Client,
    item: WorkItem,
    context: RunContext,
    *,
    plugin_name: str,
    key: str,
    resources: dict[str, float] | None,
) -> Future[SeriesRecord]:
    """Submit one series' task so that it waits on the scheduler until a worker thread is free.

    ``Client.submit`` would not do: the scheduler keeps tasks in its queue (up to
    ``worker-saturation`` x threads per worker) only when it takes them for "root-ish", i.e.
    their group is larger than twice the cluster's threads, or they are marked as data
    producers. A batch of a few series is neither, so every series would be sent to a
    worker at once, queued there behind the one it runs, and a worker's death would count
    against all of them (Dask's ``allowed-failures`` counts every task *assigned* to the
    dead worker): a healthy series could be failed for sharing a worker with a poison one.
    So each series is marked a data producer (``Task(..., _data_producer=True)``, as dask's
    own I/O layers mark theirs; ``submit`` has no option for it). One graph per series with
    ``fifo_timeout=0`` gives each its own generation: they start in the plan's order.
    Tasks with resource restrictions are never queued on the scheduler (Dask), see
    docs/scale-out.md.
    """
    from dask._task_spec import Task

    task = Task(key, _run_on_worker, item, context, plugin_name, _data_producer=True)
    future: Future[SeriesRecord] = client.get(
        {key: task}, key, sync=False, resources=resources, fifo_timeout=0
    )
    return future


def _suspicious(key: str, dask_scheduler: Any = None) -> int:
    """Count the workers that died while running ``key`` (runs on the scheduler)."""
    task = dask_scheduler.tasks.get(key) if dask_scheduler is not None else None
    return int(task.suspicious) if task is not None else 0


@contextmanager
def _client(options: DaskOptions) -> Iterator[tuple[Client, Callable[[], bool]]]:
    """Connect a client, and give a check that the cluster can still run tasks.

    A remote cluster is always taken as able (workers may join at any time); a local one
    is not once every worker process is gone for good.
    """
    import dask
    from distributed import Client, LocalCluster

    if options.scheduler is not None:
        try:
            client = Client(options.scheduler, timeout="30s")
        except (OSError, TimeoutError) as exc:
            raise ConfigError(
                f"cannot connect to the Dask scheduler at {options.scheduler} ({exc}); check "
                "the address and that `dask scheduler` is running and reachable"
            ) from exc
        with client:
            yield client, lambda: True
        return
    workers = options.local_workers or 1
    threads = options.threads_per_worker or max(1, (os.cpu_count() or 1) // workers)
    with (
        dask.config.set(
            {
                "distributed.scheduler.allowed-failures": options.allowed_failures,
                # With the series queued on the scheduler (_submit_series), a worker holds
                # only the series it is running: when it dies, no waiting series is counted
                # against its retries (Dask counts every task assigned to a dead worker as
                # "suspicious").
                "distributed.scheduler.worker-saturation": 1.0,
                # A worker process restarted by its nanny after a death re-registers once
                # torch and MONAI are imported again, which takes more than Dask's default
                # 15 s on a busy host; the cluster would drop it for good meanwhile.
                "distributed.deploy.lost-worker-timeout": "10 minutes",
            }
        ),
        LocalCluster(
            n_workers=workers,
            threads_per_worker=threads,
            processes=True,
            resources=dict(options.worker_resources) or None,
            dashboard_address=options.dashboard_address,
            host="127.0.0.1",
        ) as cluster,
        Client(cluster) as client,
    ):
        if options.dashboard_address is not None:
            _log.info("Dask dashboard: %s", cluster.dashboard_link)
        yield client, lambda: bool(cluster.workers)


def _killed_reason(exc: BaseException, attempts: int) -> str:
    return (
        f"a Dask worker died while running this series, {attempts} time(s) "
        f"({type(exc).__name__}); the series is given up so the rest can go on. A series "
        "that kills workers repeatedly usually exhausts memory: check the workers' "
        "logs and memory limit"
    )


def run_items_on_dask(
    items: Sequence[WorkItem],
    context: RunContext,
    *,
    options: DaskOptions,
    device: str = "auto",
    segmenter: Segmenter | None = None,
    on_result: Callable[[SeriesRecord], None],
) -> None:
    """Run work items as Dask tasks; hand each record to ``on_result`` as it arrives.

    Parameters
    ----------
    items
        The items to run (from :meth:`monai_tumor.pipeline.plan.BatchPlan.resume`).
    context
        Run-wide settings; its export and output folders must be visible to
        every worker at the same paths.
    options
        Scheduler address or local cluster, resources, retries.
    device
        Device of the model on each worker.
    segmenter
        A picklable model to ship to the workers instead of loading the bundle there.
    on_result
        Called on the client thread with each final record (``worker`` and
        ``attempts`` filled in), in completion order.

    Raises
    ------
    ConfigError
        The scheduler cannot be reached.
    """
    if not items:
        return
    from distributed import wait

    token = uuid.uuid4().hex[:8]
    plugin_name = f"monai-tumor-segmenter-{token}"
    with _client(options) as (client, alive):
        client.register_plugin(
            SegmenterPlugin(context.bundle, device=device, segmenter=segmenter),
            name=plugin_name,
        )
        try:
            futures = {
                _submit_series(
                    client,
                    item,
                    context,
                    plugin_name=plugin_name,
                    key=f"{TASK_PREFIX}-{item.record.series_key}-{token}",
                    resources=dict(options.worker_resources) or None,
                ): item
                for item in items
            }
            pending = set(futures)
            while pending:
                try:
                    done, pending = wait(pending, timeout=_POLL_S, return_when="FIRST_COMPLETED")
                except TimeoutError:
                    if alive():
                        continue
                    for future in pending:
                        on_result(_cluster_lost(futures[future]))
                    return
                for future in done:
                    item = futures[future]
                    died = client.run_on_scheduler(_suspicious, future.key)
                    if future.status == "finished":
                        record = replace(future.result(), attempts=died + 1)
                    else:
                        exc = future.exception()
                        assert exc is not None
                        record = _task_failure(item, exc, died, context)
                    future.release()
                    on_result(record)
        finally:
            client.unregister_worker_plugin(plugin_name)


def _cluster_lost(item: WorkItem) -> SeriesRecord:
    """Return the record of a series left when a local cluster lost every worker."""
    return replace(
        item.record,
        status=SeriesStatus.FAILED,
        reason="the local Dask cluster lost all its worker processes before this series ran "
        "(see the log for why they died); rerun to resume",
        error_type="ClusterLost",
        exit_code=1,
    )


def _task_failure(
    item: WorkItem, exc: BaseException, died: int, context: RunContext
) -> SeriesRecord:
    """Return the record of a task that did not return (workers died, or it raised)."""
    from distributed import KilledWorker

    if isinstance(exc, KilledWorker):
        return replace(
            item.record,
            status=SeriesStatus.FAILED,
            reason=_killed_reason(exc, died),
            error_type=type(exc).__name__,
            exit_code=1,
            attempts=died,
        )
    return replace(failed_record(item, exc, 0.0, context), attempts=died + 1)

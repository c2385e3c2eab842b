"""Radiomics features in helper processes, started before they are needed.

MIRP is pure Python on numpy, pandas and scipy. Run where the case is segmented, it holds
the interpreter for seconds while the mask, SEG, overlay and viewer wait, and a cold
``monai-tumor infer`` pays for MIRP's first call on its critical path. A
:class:`FeaturePool` starts its worker processes at once, at a lower scheduling priority
(:data:`WORKER_NICENESS`); each loads MIRP and runs one small extraction on a synthetic
sphere while the caller does its own imports and segments. :meth:`FeaturePool.compute`
then splits one lesion's feature families into as many groups of similar cost as there are
workers (:func:`split_families`), runs the groups at the same time and merges the values in
MIRP's order.

The values are those of one :func:`~monai_tumor.radiomics.extract.
compute_features_in_memory` call, in the same order: each family is computed from the same
image, mask and settings whatever other families are asked for, and MIRP seeds its Monte
Carlo estimate of Moran's I from the region's name, not from the families
(``tests/unit/test_pool.py`` compares the two on real nodules). The workers are spawned,
never forked: the calling process has torch's OpenMP threads running, which a forked child
must not inherit. Spawning re-imports the caller's ``__main__`` module in each worker, so a
script that starts a pool must guard its entry point with ``if __name__ == "__main__":``
(the ``monai-tumor`` console script does).

A worker that dies (killed, out of memory) is not fatal: the lesion is computed in the
calling process, with a warning, and so is every later one. A worker whose caller is gone
(killed with SIGKILL, which never closes the pool) exits by itself within a second.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import multiprocessing
import multiprocessing.queues
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from monai_tumor.cpus import available_cpus
from monai_tumor.radiomics.settings import RadiomicsSettings, load_radiomics_settings

if TYPE_CHECKING:
    import nibabel as nib

__all__ = [
    "FAMILY_COST",
    "WORKER_NICENESS",
    "FeaturePool",
    "merge_in_output_order",
    "split_families",
]

_log = logging.getLogger(__name__)

#: Relative cost of each MIRP feature family (seconds on a 150,000-voxel glioma, one core),
#: used only to balance the groups of :func:`split_families`.
FAMILY_COST: dict[str, float] = {
    "morph": 0.33,
    "li": 0.38,
    "stat": 0.14,
    "ih": 0.15,
    "ivh": 0.13,
    "glcm": 0.70,
    "glrlm": 0.46,
    "glszm": 0.17,
    "gldzm": 0.27,
    "ngtdm": 0.65,
    "ngldm": 0.56,
}

#: MIRP's order of the families in its output, by the prefix of the feature names
#: (``morph_``, ``loc_``, ``ivh_``...); merged values are put back in this order.
_OUTPUT_ORDER = ("morph", "loc", "ivh", "stat", "ih", "cm", "rlm", "szm", "dzm", "ngt", "ngl")

#: How much lower the workers' scheduling priority is than the caller's (``os.nice``).
WORKER_NICENESS = 10

#: Threads of the numerical libraries inside a worker (the workers are the parallelism).
_WORKER_THREADS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def split_families(families: Sequence[str], groups: int) -> list[tuple[str, ...]]:
    """Split feature families into at most ``groups`` groups of similar cost.

    Longest first, each to the cheapest group so far (:data:`FAMILY_COST`; an unknown
    family counts as the dearest). Empty groups are dropped; within a group the families
    keep their order in ``families``.

    Parameters
    ----------
    families
        The families of the settings (``RadiomicsSettings.families``).
    groups
        How many groups at most (the number of workers).

    Returns
    -------
    list of tuple of str
        Non-empty groups whose union is ``families``.
    """
    dearest = max(FAMILY_COST.values())
    buckets: list[list[str]] = [[] for _ in range(max(1, groups))]
    loads = [0.0] * len(buckets)
    for family in sorted(families, key=lambda f: -FAMILY_COST.get(f, dearest)):
        target = loads.index(min(loads))
        buckets[target].append(family)
        loads[target] += FAMILY_COST.get(family, dearest)
    rank = {f: i for i, f in enumerate(families)}
    return [tuple(sorted(b, key=rank.__getitem__)) for b in buckets if b]


def _output_rank(name: str) -> int:
    prefix = name.split("_", 1)[0]
    return _OUTPUT_ORDER.index(prefix) if prefix in _OUTPUT_ORDER else len(_OUTPUT_ORDER)


def merge_in_output_order(parts: Sequence[dict[str, float]]) -> dict[str, float]:
    """Merge the values of several family groups in the order one MIRP call gives them."""
    merged: dict[str, float] = {}
    for part in parts:
        merged.update(part)
    # a stable sort: within a family the names keep the order MIRP gave them
    return dict(sorted(merged.items(), key=lambda item: _output_rank(item[0])))


class FeaturePool:
    """Worker processes that compute one lesion's radiomics features in parallel.

    Parameters
    ----------
    workers
        Worker processes (at least 1).
    warm
        Run a small extraction in each worker as soon as it starts, so the first lesion
        does not pay for MIRP's and ITK's set-up.

    Examples
    --------
    >>> with FeaturePool(workers=2) as pool:  # doctest: +SKIP
    ...     values = pool.compute(image, mask, settings=settings, sample_name="lesion-1")
    """

    def __init__(self, workers: int = 2, *, warm: bool = True) -> None:
        self.workers = max(1, int(workers))
        self._lock = threading.Lock()
        self._broken = False
        self._announced = False
        context = multiprocessing.get_context("spawn")
        # The workers' log records and warnings come back here and go where this
        # process's logging sends them (the run log; the terminal only as configured).
        self._log_queue = context.Queue()
        self._listener = logging.handlers.QueueListener(self._log_queue, _CallerLogging())
        self._listener.start()
        self._executor: ProcessPoolExecutor | None = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(os.getpid(), self._log_queue),
        )
        # Processes are spawned as tasks arrive: one task per worker starts them all now.
        self._warming: list[Future[None]] = [
            self._executor.submit(_warm_worker if warm else _noop) for _ in range(self.workers)
        ]

    @classmethod
    def for_bundle(
        cls, bundle_root: str | os.PathLike[str], *, features: bool = True
    ) -> FeaturePool | None:
        """Start a pool when a run on this bundle will compute features and it pays.

        Parameters
        ----------
        bundle_root
            The segmentation bundle folder.
        features
            ``False`` (``--no-features``): no pool.

        Returns
        -------
        FeaturePool or None
            ``None`` when features are off, the bundle has no ``configs/radiomics.json``
            (or an unreadable one: the run reports that itself), or this process has a
            single CPU (the workers would only take turns with the caller).
        """
        cpus = available_cpus()
        if not features or cpus < 2:
            return None
        try:
            if load_radiomics_settings(Path(bundle_root)) is None:
                return None
        except Exception:
            return None
        return cls(workers=min(2, cpus))

    @property
    def broken(self) -> bool:
        """Whether the pool stopped working (features are then computed in the caller)."""
        return self._broken

    def compute(
        self,
        image: nib.Nifti1Image,
        mask: nib.Nifti1Image,
        *,
        settings: RadiomicsSettings,
        sample_name: str,
    ) -> dict[str, float]:
        """Features of one image and binary mask, as one MIRP call would give them.

        Parameters
        ----------
        image, mask
            As :func:`~monai_tumor.radiomics.extract.compute_features_in_memory` takes
            them (sent to the workers by pickling).
        settings
            The bundle's radiomics settings.
        sample_name
            The region's name (seeds MIRP's Monte Carlo estimates).

        Returns
        -------
        dict
            ``{feature tag: value}`` in MIRP's order.

        Raises
        ------
        RadiomicsError
            MIRP failed on this region (raised in a worker, re-raised here).
        """
        from monai_tumor.radiomics.extract import compute_features_in_memory

        executor = self._executor
        if executor is None or self._broken:
            return compute_features_in_memory(
                image, mask, settings=settings, sample_name=sample_name
            )
        groups = split_families(settings.families, self.workers)
        if not self._announced:
            self._announced = True
            _log.info("radiomics features in %d worker processes", self.workers)
        try:
            futures = [
                executor.submit(_compute_group, image, mask, settings, sample_name, group)
                for group in groups
            ]
            parts = [f.result() for f in futures]
        except (BrokenProcessPool, RuntimeError) as exc:  # killed worker / pool shut down
            with self._lock:
                if not self._broken:
                    _log.warning(
                        "radiomics worker processes stopped (%s); computing features in this "
                        "process from now on",
                        exc,
                    )
                self._broken = True
            return compute_features_in_memory(
                image, mask, settings=settings, sample_name=sample_name
            )
        return merge_in_output_order(parts)

    def close(self) -> None:
        """Stop the workers at once (a warm-up still running is abandoned).

        :meth:`compute` returns only when its lesion is done, so nothing of value runs in a
        worker here. Idle workers are terminated rather than asked to exit: their Python
        shutdown (numpy, pandas, scipy, MIRP) would keep the caller waiting about 0.2 s.
        """
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is None:
            return
        # The process table, read before shutdown() drops it (a private attribute, read
        # only; Python >= 3.14 has terminate_workers() for this).
        processes = list((getattr(executor, "_processes", None) or {}).values())
        terminate = getattr(executor, "terminate_workers", None)
        if terminate is not None:
            terminate()
        else:
            for process in processes:
                if process.is_alive():
                    process.terminate()
        executor.shutdown(wait=False, cancel_futures=True)
        self._listener.stop()
        self._log_queue.close()

    def __enter__(self) -> FeaturePool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._executor is None else "broken" if self._broken else "running"
        return f"FeaturePool(workers={self.workers}, {state})"


class _CallerLogging(logging.Handler):
    """Hand a worker's log record to the calling process's logger of the same name."""

    def emit(self, record: logging.LogRecord) -> None:
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)


def _init_worker(parent: int, log_queue: multiprocessing.queues.Queue[logging.LogRecord]) -> None:
    """Start a worker: one thread per numerical library, lower priority, logs to the caller.

    It also ends itself when the caller is gone (:func:`_exit_with_parent`).

    The workers' warm-up runs while the caller imports torch and MONAI and segments; at
    :data:`WORKER_NICENESS` it takes only the CPU the caller leaves idle (a cold glioma
    ``infer``: 8.2 s against 8.7 s at equal priority, docs/benchmarks.md).
    """
    for name in _WORKER_THREADS_ENV:
        os.environ.setdefault(name, "1")
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    # MIRP calls logging.basicConfig, a no-op once the root logger has a handler.
    root.addHandler(logging.handlers.QueueHandler(log_queue))
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    with contextlib.suppress(OSError):  # not permitted: run at the caller's priority
        os.nice(WORKER_NICENESS)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int, interval_s: float = 1.0) -> None:
    """End this worker when the process that started it (pid ``parent``) is gone.

    A worker waits for tasks on a pipe, and a parent killed with SIGKILL never closes
    it: without this the worker would wait for ever. The pid comes from the parent, so a
    worker still starting when its parent dies sees the difference too.
    """
    while os.getppid() == parent:
        time.sleep(interval_s)
    os._exit(1)


def _noop() -> None:
    return None


def _compute_group(
    image: nib.Nifti1Image,
    mask: nib.Nifti1Image,
    settings: RadiomicsSettings,
    sample_name: str,
    families: tuple[str, ...],
) -> dict[str, float]:
    from monai_tumor.radiomics.extract import compute_features_in_memory

    return compute_features_in_memory(
        image, mask, settings=replace(settings, families=families), sample_name=sample_name
    )


def _warm_worker() -> None:
    """Load MIRP and run every family once on a small synthetic sphere."""
    import nibabel as nib
    import numpy as np

    from monai_tumor.radiomics.extract import compute_features_in_memory

    grid = np.indices((12, 12, 12)).astype(np.float32) - 5.5
    inside = (grid**2).sum(axis=0) <= 16.0
    rng = np.random.default_rng(0)
    voxels = (100.0 + 20.0 * rng.standard_normal(inside.shape)).astype(np.float32)
    settings = RadiomicsSettings(
        modality="MR",
        new_spacing_mm=1.0,
        resegmentation_range=None,
        discretisation="fixed_bin_number",
        n_bins=8,
        bin_width=None,
    )
    image = nib.Nifti1Image(voxels, np.eye(4))
    mask = nib.Nifti1Image(inside.astype(np.uint8), np.eye(4))
    try:
        compute_features_in_memory(image, mask, settings=settings, sample_name="warm-up")
    except Exception as exc:  # only a warm-up: real calls report their errors
        _log.debug("radiomics worker warm-up failed: %s", exc)

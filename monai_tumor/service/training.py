"""Fine-tuning in a background process, one run at a time, with MONAI Label's task records.

``POST /train/{model}`` starts ``python -m monai_tumor.service.train_worker JOB`` (which
calls :func:`monai_tumor.training.finetune_bundle`) in a new process, so a crash or a
``DELETE /train/`` never takes the server down. When the process ends, the new weights
are registered as a model version (:meth:`ServedModel.register`), and the server switches
to them only if they validate better than the weights they started from.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monai_tumor.errors import RequestError
from monai_tumor.export.atomic import atomic_write_json
from monai_tumor.service.datastore import Datastore
from monai_tumor.service.models import ServedModel

__all__ = ["MIN_LABELLED_IMAGES", "TRAIN_PARAMS", "TrainManager", "split_pairs"]

#: Request params passed on to the bundle's train.json (anything else is ignored).
TRAIN_PARAMS = {
    "max_epochs": int,
    "num_samples": int,
    "batch_size": int,
    "learning_rate": float,
    "seed": int,
}


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


#: Fewest labelled images a fine-tuning run needs: one to train on, one held out.
MIN_LABELLED_IMAGES = 2


def split_pairs(
    pairs: list[dict[str, str]], *, val_fraction: float
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Split ``{image, label}`` pairs into training and held-out validation pairs.

    ``round(len(pairs) * val_fraction)`` pairs, at least one and at most all but one, are
    held out: those whose image file name has the smallest SHA-256 digest. The split is
    deterministic (the same labelled images always give the same split, whatever order
    they are listed in) and no image is in both parts.

    Raises
    ------
    RequestError
        400 with fewer than :data:`MIN_LABELLED_IMAGES` pairs, or two pairs of one image.
    """
    names = [Path(p["image"]).name for p in pairs]
    if len(set(names)) != len(names):
        raise RequestError(
            f"fine-tuning pairs name an image twice ({sorted(names)}); each labelled image "
            "must be in the training or the validation part, never both"
        )
    if len(pairs) < MIN_LABELLED_IMAGES:
        raise RequestError(
            f"fine-tuning needs final labels on at least {MIN_LABELLED_IMAGES} images (one to "
            f"train on, one held out to validate), found {len(pairs)}; save corrected labels "
            "of more images first"
        )
    n_val = min(len(pairs) - 1, max(1, round(len(pairs) * val_fraction)))
    ranked = sorted(
        range(len(pairs)), key=lambda i: hashlib.sha256(names[i].encode("utf-8")).hexdigest()
    )
    held_out = set(ranked[:n_val])
    train = [p for i, p in enumerate(pairs) if i not in held_out]
    val = [p for i, p in enumerate(pairs) if i in held_out]
    return train, val


class TrainManager:
    """Runs fine-tuning jobs one at a time and keeps their MONAI Label task records."""

    def __init__(
        self,
        models: Mapping[str, ServedModel],
        datastore: Datastore,
        *,
        val_fraction: float,
        overrides: Mapping[str, Any],
    ) -> None:
        self._models = models
        self._datastore = datastore
        self._val_fraction = val_fraction
        self._overrides = dict(overrides)
        self._lock = threading.Lock()
        self._tasks: list[dict[str, Any]] = []
        self._process: subprocess.Popen[str] | None = None
        self.stats: dict[str, dict[str, Any]] = {name: {} for name in models}

    def running(self) -> dict[str, Any] | None:
        """Return the task record of the run in progress, if any."""
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                return self._tasks[-1]
            return None

    def status(self, *, all_tasks: bool = False) -> Any:
        """Return the newest task record (or all), as MONAI Label's ``GET /train/``.

        Raises
        ------
        RequestError
            404 if no task ever ran.
        """
        with self._lock:
            if not self._tasks:
                raise RequestError("No Train Tasks Found", status=404)
            return [_public(t) for t in self._tasks] if all_tasks else _public(self._tasks[-1])

    def pairs_for(self, served: ServedModel) -> list[dict[str, str]]:
        """Return the ``{image, label}`` file pairs of the final labels this model can learn.

        One datastore may hold images of several models (CT VOIs, stacked MR): an image
        counts for a model when the model reads it (:meth:`ServedModel.reads`: channel
        count and modality) and every value of its final label is one the model writes.
        """
        import torch

        from monai_tumor.service.labels import read_label

        allowed = served.label_values
        pairs = []
        for image_id in self._datastore.labeled("final"):
            latest = self._datastore.label(image_id, "final")
            if latest is None:
                continue
            if not served.reads(self._datastore.load(image_id)):
                continue
            values = {int(v) for v in torch.unique(read_label(latest.path).as_tensor()).tolist()}
            if values <= allowed:
                pairs.append(
                    {"image": str(self._datastore.image_file(image_id)), "label": str(latest.path)}
                )
        return pairs

    def start(self, model: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Start fine-tuning ``model`` on the datastore's final labels.

        Raises
        ------
        RequestError
            404 for an unknown model, 429 while a run is going, 400 with final labels on
            fewer than :data:`MIN_LABELLED_IMAGES` images the model reads.
        """
        served = self._models.get(model)
        if served is None:
            raise RequestError(f"no model {model!r}; known: {sorted(self._models)}", status=404)
        pairs = self.pairs_for(served)
        if len(pairs) < MIN_LABELLED_IMAGES:
            raise RequestError(
                f"model {model!r} has final labels on {len(pairs)} image(s) it reads; "
                f"fine-tuning needs at least {MIN_LABELLED_IMAGES} (one to train on, one held "
                "out to validate, never the same image): save corrected labels (tag 'final') "
                "of more of this model's images first"
            )
        train, val = split_pairs(pairs, val_fraction=self._val_fraction)
        overrides = dict(self._overrides)
        for key, kind in TRAIN_PARAMS.items():
            if key in params:
                try:
                    overrides[key] = kind(params[key])
                except (TypeError, ValueError) as exc:
                    raise RequestError(f"train param {key}={params[key]!r}: {exc}") from exc
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                raise RequestError("++++++++++ Train Task is Already Running", status=429)
            folder = served.next_version_dir()
            start_from = served.active_version()
            job = {
                "bundle": str(served.info.root),
                "train_pairs": train,
                "val_pairs": val,
                "init_weights": str(start_from.weights),
                "output_dir": str(folder),
                "max_epochs": int(overrides.pop("max_epochs", 1)),
                "overrides": overrides,
            }
            atomic_write_json(folder / "job.json", job)
            task: dict[str, Any] = {
                "id": str(uuid.uuid4()),
                "status": "RUNNING",
                "request": {
                    "model": model,
                    **{k: v for k, v in params.items() if k in TRAIN_PARAMS},
                },
                "start_ts": _now(),
                "details": deque(maxlen=20),
                "model": model,
                "train_images": len(train),
                "val_images": len(val),
                "start_version": start_from.number,
            }
            log = open(folder / "train.log", "w", encoding="utf-8")  # noqa: SIM115 (closed by the watcher)
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "monai_tumor.service.train_worker",
                    str(folder / "job.json"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )
            self._tasks.append(task)
            threading.Thread(
                target=self._watch, args=(self._process, log, task, served, folder), daemon=True
            ).start()
            return _public(task)

    def stop(self) -> dict[str, Any]:
        """Stop the run in progress (``DELETE /train/``); returns its record."""
        with self._lock:
            process = self._process
            if process is None or process.poll() is not None:
                return {}
            self._tasks[-1]["status"] = "STOPPED"
            process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        with self._lock:
            return _public(self._tasks[-1])

    def _watch(
        self,
        process: subprocess.Popen[str],
        log: Any,
        task: dict[str, Any],
        served: ServedModel,
        folder: Path,
    ) -> None:
        code = process.wait()
        log.close()
        lines = (folder / "train.log").read_text("utf-8", errors="replace").splitlines()
        result_file = folder / "result.json"
        with self._lock:
            task["details"].extend(lines[-20:])
            task["end_ts"] = _now()
            if task["status"] == "STOPPED":
                return
            if code != 0 or not result_file.is_file():
                task["status"] = "ERROR"
                return
        result = json.loads(result_file.read_text("utf-8"))
        version, switched = served.register(
            folder,
            metric=float(result["best"]),
            baseline=float(result["baseline"]),
            metric_name=str(result["metric_name"]),
        )
        # the full training state (~3x the weights) is not needed once the run is over
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)
        with self._lock:
            task["status"] = "DONE"
            task["result"] = {
                "metric_name": version.metric_name,
                "baseline": version.baseline,
                "best": version.metric,
                "per_epoch": result["per_epoch"],
                "model_version": version.number,
                "activated": switched,
                "active_version": served.active_version().number,
            }
            self.stats[served.name] = {
                "last_run": task["end_ts"],
                "best_metric": version.metric,
                "baseline_metric": version.baseline,
                "metric_name": version.metric_name,
                "model_version": served.active_version().number,
                "train_images": task["train_images"],
                "val_images": task["val_images"],
            }


def _public(task: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(task)
    out["details"] = list(task.get("details", []))
    return out

"""The FastAPI application: MONAI Label 0.8.5's REST API over our bundles and datastore.

Paths, parameters and response shapes follow ``monailabel/endpoints/*.py`` and what
``monailabel.client.MONAILabelClient`` (and so the 3D Slicer and OHIF plugins) send and
parse: ``/info/``, ``/datastore/...``, ``/infer/{model}``, ``/activelearning/{strategy}``,
``/train/...``, ``/auth/...``. Everything the endpoints do lives in the other modules of
this package; here requests are parsed, limits enforced and errors mapped to statuses.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import shutil
import tempfile
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response

from monai_tumor import __version__
from monai_tumor.errors import BundleError, MonaiTumorError, RequestError
from monai_tumor.export.seg import AlgorithmInfo, SegmentAlgorithmType, SegmentSpec
from monai_tumor.service.config import ServiceConfig
from monai_tumor.service.datastore import (
    Datastore,
    LocalDatastore,
    check_id,
    volume_suffix,
)
from monai_tumor.service.labels import RESULT_SUFFIXES, read_label, validate_label, write_label
from monai_tumor.service.models import InferenceGate, ServedModel, models_for_image
from monai_tumor.service.strategies import STRATEGIES, Strategies
from monai_tumor.service.training import TrainManager

__all__ = ["Service", "create_app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _TooLargeError(Exception):
    """The request body passed the limit while it was being read."""


class BodyLimit:
    """ASGI middleware: requests whose body exceeds ``limit`` bytes get 413, unread."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._drain(receive)
            await self._reject(send)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLargeError
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLargeError:
            if not started:
                await self._drain(receive)
                await self._reject(send)

    @staticmethod
    async def _drain(receive: Receive) -> None:
        """Read and drop the rest of the body, so the client sees the answer, not a reset."""
        while True:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                return

    async def _reject(self, send: Send) -> None:
        body = json.dumps(
            {"detail": f"request body larger than the server's limit of {self.limit} bytes"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


class Service:
    """The server's parts for one configuration (no module-level state)."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        state = config.resolved_state_dir()
        state.mkdir(parents=True, exist_ok=True)
        if config.is_dicomweb:
            from monai_tumor.service.dicomweb import DicomWebDatastore

            self.datastore: Datastore = DicomWebDatastore(
                config.studies, state, image_cache=config.image_cache
            )
        else:
            self.datastore = LocalDatastore(
                Path(config.studies), state, image_cache=config.image_cache
            )
        self.models: dict[str, ServedModel] = {}
        for bundle in config.bundles:
            served = ServedModel(
                Path(bundle), state, device=config.device, num_threads=config.num_threads
            )
            if served.name in self.models:
                raise BundleError(f"two bundles named {served.name!r}", path=bundle)
            self.models[served.name] = served
        if not self.models:
            raise BundleError("no bundle given; pass at least one --bundle")
        from monai_tumor.service.dicomweb import DicomWebDatastore

        if isinstance(self.datastore, DicomWebDatastore):
            self.datastore.segments_for = self.seg_description
        self.gate = InferenceGate(workers=config.infer_workers, pending=config.max_pending_infers)
        self.strategies = Strategies(self.datastore, self.models, self.gate)
        self.trainer = TrainManager(
            self.models,
            self.datastore,
            val_fraction=config.val_fraction,
            overrides=dict(config.train_overrides),
        )

    def seg_description(self, image: Any) -> tuple[tuple[SegmentSpec, ...], AlgorithmInfo]:
        """Segments and algorithm of a corrected label's DICOM SEG.

        The segments are those of the first served model that reads the image
        (:meth:`ServedModel.reads`: channels and ``Modality``; the label was checked against
        those models' values when it was saved), else of the first model; they are marked
        SEMIAUTOMATIC (a model's output corrected by a person).
        """
        models = list(self.models.values())
        chosen = next((m for m in models if m.reads(image)), models[0])
        segments = tuple(
            dataclasses.replace(s, algorithm_type=SegmentAlgorithmType.SEMIAUTOMATIC)
            for s in chosen.info.segments
        )
        algorithm = AlgorithmInfo(
            name=chosen.name,
            version=chosen.info.version,
            parameters=(("model_version", str(chosen.active_version().number)),),
        )
        return segments, algorithm

    def check_label(
        self, label_file: Path, image: Any, *, image_id: str, params: dict[str, Any]
    ) -> tuple[Any, list[str]]:
        """Read an uploaded label and check it against its image and that image's models.

        The allowed values are those of the models that read the image
        (:func:`~monai_tumor.service.models.models_for_image`), never of every served
        model: a glioma value on a CT image is refused even when both models are served.

        Returns
        -------
        tuple[MetaTensor, list[str]]
            The checked uint8 label and the names of the models it is for.

        Raises
        ------
        RequestError
            400 unreadable file or unknown ``params.model``; 422 when the image has no
            model, or shape, grid or values do not fit.
        """
        chosen = models_for_image(self.models, image, image_id=image_id, params=params)
        allowed = {v for m in chosen for v in m.label_values}
        checked = validate_label(
            read_label(label_file),
            image,
            allowed=allowed,
            image_id=image_id,
            allowed_by=", ".join(m.name for m in chosen),
        )
        return checked, [m.name for m in chosen]

    def info(self) -> dict[str, Any]:
        """``GET /info/`` (MONAI Label's ``MONAILabelApp.info()``)."""
        models = {name: m.mirror_info() for name, m in self.models.items()}
        labels: list[str] = []
        for m in models.values():
            for name in sorted(m["labels"], key=lambda k: m["labels"][k]):
                if name not in labels:
                    labels.append(name)
        return {
            "name": "monai-tumor",
            "description": "monai-tumor annotation server (MONAI Label API) over "
            + ", ".join(sorted(self.models)),
            "version": __version__,
            "labels": labels,
            "models": models,
            "trainers": {
                name: {
                    "description": f"Fine-tune {name} on the final labels (its train.json)",
                    "config": {"max_epochs": 1, "num_samples": 1, "batch_size": 1},
                }
                for name in self.models
            },
            "strategies": {k: {"description": v} for k, v in STRATEGIES.items()},
            "scoring": {},
            "train_stats": self.trainer.stats,
            "datastore": self.datastore.status(),
        }


def _params(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RequestError(f"params is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise RequestError(f"params must be a JSON object, found {type(value).__name__}")
    return value


def _store_upload(upload: UploadFile, folder: Path, *, default_suffix: str) -> tuple[Path, str]:
    """Copy an upload into ``folder`` under a fresh name; return the path and its suffix."""
    suffix = volume_suffix(upload.filename or "") or default_suffix
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".upload-", suffix=suffix, dir=folder)
    with open(fd, "wb") as out:
        shutil.copyfileobj(upload.file, out)
    return Path(name), suffix


def _multipart(params: dict[str, Any], file: Path) -> Response:
    """MONAI Label's infer answer: a ``params`` JSON field and the label file (``image``)."""
    from urllib3 import encode_multipart_formdata

    body, content_type = encode_multipart_formdata(
        {
            "params": json.dumps(params),
            "image": (file.name, file.read_bytes(), "application/octet-stream"),
        }
    )
    return Response(content=body, media_type=content_type)


def create_app(config: ServiceConfig) -> FastAPI:
    """Build the FastAPI app for ``config`` (serve it with uvicorn).

    Parameters
    ----------
    config
        Studies source, bundles, state folder, token and limits.

    Returns
    -------
    FastAPI
        The app; ``app.state.service`` is its :class:`Service`.

    Raises
    ------
    BundleError
        If a bundle cannot be read.
    """
    service = Service(config)
    app = FastAPI(title="monai-tumor annotation server", version=__version__)
    app.state.service = service
    token = config.token

    def authorize(request: Request) -> None:
        if token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(value.strip(), token):
            raise HTTPException(
                status_code=401,
                detail="missing or wrong bearer token; send 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    guard = [Depends(authorize)]

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse(status_code=exc.status, content={"detail": str(exc)})

    @app.exception_handler(BundleError)
    async def _bundle_error(request: Request, exc: BundleError) -> JSONResponse:
        return JSONResponse(status_code=500, content={"detail": str(exc)})

    @app.exception_handler(MonaiTumorError)
    async def _input_error(request: Request, exc: MonaiTumorError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    # ------------------------------------------------------------------ auth

    @app.get("/auth/")
    def auth_info() -> dict[str, Any]:
        return {"enabled": token is not None, "client_id": "monai-tumor"}

    @app.post("/auth/token")
    def auth_token(
        username: Annotated[str, Form()] = "", password: Annotated[str, Form()] = ""
    ) -> dict[str, str]:
        # No user database: the password is the server's token (any user name).
        if token is None or not secrets.compare_digest(password, token):
            raise HTTPException(status_code=401, detail="wrong token (give it as the password)")
        return {"access_token": token, "token_type": "Bearer"}

    @app.get("/auth/token/valid", dependencies=guard)
    def auth_valid() -> dict[str, Any]:
        return {}

    # ------------------------------------------------------------------ info

    @app.get("/info/", dependencies=guard)
    def info() -> dict[str, Any]:
        return service.info()

    # ------------------------------------------------------------- datastore

    ds = service.datastore

    @app.get("/datastore/", dependencies=guard)
    def datastore(output: str | None = None) -> Any:
        if output in (None, "stats"):
            return ds.status()
        if output == "all":
            return ds.json()
        if output == "train":
            return ds.datalist()
        raise RequestError(f"output must be stats, all or train, found {output!r}", status=422)

    @app.put("/datastore/", dependencies=guard, include_in_schema=False)
    @app.put("/datastore/image", dependencies=guard)
    def add_image(
        file: Annotated[UploadFile, File()],
        image: str | None = None,
        params: Annotated[str, Form()] = "{}",
    ) -> dict[str, Any]:
        _params(params)
        suffix = volume_suffix(file.filename or "")
        if suffix is None:
            raise RequestError(
                f"unsupported image file {file.filename!r}; upload NIfTI (.nii.gz, .nii), "
                "NRRD or MHA",
                status=415,
            )
        image_id = image or Path(file.filename or "").name[: -len(suffix)]
        check_id(image_id)
        path, _ = _store_upload(file, ds.state_dir / "tmp", default_suffix=suffix)
        try:
            return {"image": ds.add_image(image_id, path, suffix)}
        finally:
            path.unlink(missing_ok=True)

    @app.delete("/datastore/image", dependencies=guard)
    def remove_image(id: str) -> dict[str, Any]:
        path = ds.image_path(id)
        if path.parent != ds.uploads_dir:
            raise RequestError(
                f"image {id!r} belongs to the studies source, which the server only reads",
                status=403,
            )
        path.rename(ds.state_dir / "trash" / path.name)
        return {}

    @app.get("/datastore/image", dependencies=guard)
    @app.head("/datastore/image", dependencies=guard)
    def download_image(image: str) -> FileResponse:
        path = ds.image_file(image)
        return FileResponse(path, media_type="application/octet-stream", filename=path.name)

    @app.get("/datastore/image/info", dependencies=guard)
    def image_info(image: str) -> dict[str, Any]:
        img = ds.load(image)
        return {
            "name": ds.image_path(image).name,
            "shape": list(img.shape[1:]),
            "channels": int(img.shape[0]),
            "affine_ras": np.asarray(img.affine, dtype=float).round(6).tolist(),
            "labels": {
                t: v.version for t in ("original", "final") if (v := ds.label(image, t)) is not None
            },
        }

    @app.put("/datastore/label", dependencies=guard)
    def save_label(
        image: str,
        label: Annotated[UploadFile, File()],
        params: Annotated[str, Form()] = "{}",
        tag: str = "final",
    ) -> dict[str, Any]:
        info = _params(params)
        tag = check_id(tag or "final", what="label tag")
        img = ds.load(image)
        path, _ = _store_upload(label, ds.state_dir / "tmp", default_suffix=".nii.gz")
        try:
            checked, for_models = service.check_label(path, img, image_id=image, params=info)
        finally:
            path.unlink(missing_ok=True)
        with ds.scratch_file(".nii.gz") as tmp:
            write_label(checked, tmp)
            saved = ds.save_label(image, tag, tmp, {**info, "models": for_models})
        return {"image": image, "label": image, "tag": tag, "version": saved.version}

    @app.delete("/datastore/label", dependencies=guard)
    def remove_label(id: str, tag: str) -> dict[str, Any]:
        return {"removed_versions": ds.delete_label(id, tag)}

    @app.get("/datastore/label", dependencies=guard)
    @app.head("/datastore/label", dependencies=guard)
    def download_label(label: str, tag: str, version: int | None = None) -> FileResponse:
        versions = ds.label_versions(check_id(label), check_id(tag, what="label tag"))
        chosen = [v for v in versions if version is None or v.version == version]
        if not chosen:
            raise RequestError(f"no {tag!r} label for image {label!r}", status=404)
        path = chosen[-1].path
        return FileResponse(path, media_type="application/octet-stream", filename=f"{label}.nii.gz")

    @app.get("/datastore/label/info", dependencies=guard)
    def label_info(label: str, tag: str) -> dict[str, Any]:
        versions = ds.label_versions(check_id(label), check_id(tag, what="label tag"))
        if not versions:
            raise RequestError(f"no {tag!r} label for image {label!r}", status=404)
        return {
            **dict(versions[-1].info),
            "versions": [{"version": v.version, **dict(v.info)} for v in versions],
        }

    # ----------------------------------------------------------------- infer

    @app.post("/infer/{model}", dependencies=guard)
    def infer(
        model: str,
        image: str = "",
        output: str | None = None,
        params: Annotated[str, Form()] = "{}",
        file: Annotated[UploadFile | None, File()] = None,
        label: Annotated[UploadFile | None, File()] = None,
    ) -> Any:
        p = _params(params)
        served = service.models.get(model)
        if served is None:
            raise RequestError(f"no model {model!r}; known: {sorted(service.models)}", status=404)
        if output not in (None, "image", "json", "all", "dicom_seg"):
            raise RequestError(
                f"output must be image, json, all or dicom_seg, not {output!r}", status=422
            )
        suffix = str(p.get("result_extension") or ".nii.gz")
        if suffix not in RESULT_SUFFIXES:
            raise RequestError(
                f"result_extension {suffix!r} is not supported; use one of {RESULT_SUFFIXES}"
            )
        with service.gate:
            if file is not None:
                from monai_tumor.service.datastore import load_image

                path, _ = _store_upload(file, ds.state_dir / "tmp", default_suffix=".nii.gz")
                try:
                    img = load_image(path)
                finally:
                    path.unlink(missing_ok=True)
            elif image:
                img = ds.load(image)
            else:
                raise RequestError("give an image id (?image=ID) or upload a file")
            result, result_params = served.infer(img, p)
        if output == "json":
            return result_params
        stem = image or "upload"
        if output == "dicom_seg":
            return _dicom_seg_response(service, served, image, result)
        with ds.scratch_file(suffix) as tmp:
            write_label(result, tmp)
            out = tmp.with_name(f"{stem}{suffix}")
            # the client names the saved file after this name: give the image id
            tmp.rename(out)
            try:
                if output == "image":
                    return Response(
                        content=out.read_bytes(),
                        media_type="application/octet-stream",
                        headers={"content-disposition": f'attachment; filename="{out.name}"'},
                    )
                return _multipart(result_params, out)
            finally:
                out.unlink(missing_ok=True)

    # -------------------------------------------------------- active learning

    @app.post("/activelearning/{strategy}", dependencies=guard)
    def activelearning(strategy: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return service.strategies.next_sample(strategy, params or {})

    # ----------------------------------------------------------------- train

    @app.get("/train/", dependencies=guard)
    def train_status(all: bool = False, check_if_running: bool = False) -> Any:
        if check_if_running:
            running = service.trainer.running()
            if running is None:
                raise RequestError("No Train Tasks are currently Running", status=404)
            return service.trainer.status()
        return service.trainer.status(all_tasks=all)

    @app.post("/train/", dependencies=guard, include_in_schema=False)
    def train_all(params: dict[str, Any] | None = None) -> dict[str, Any]:
        name = next(iter(service.models))
        return {
            name: {
                "result": service.trainer.start(name, (params or {}).get(name, {})),
                "detail": None,
            }
        }

    @app.post("/train/{model}", dependencies=guard)
    def train(model: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return service.trainer.start(model, params or {})

    @app.delete("/train/", dependencies=guard)
    def train_stop() -> dict[str, Any]:
        return service.trainer.stop()

    app.add_middleware(BodyLimit, limit=config.max_upload_bytes)
    return app


def _dicom_seg_response(
    service: Service, served: ServedModel, image_id: str, label: Any
) -> Response:
    """Return the label as DICOM SEG on the image's own DICOM series (DICOM images only)."""
    from monai_tumor.export.seg import AlgorithmInfo, SegExportConfig, write_dicom_seg
    from monai_tumor.pipeline.infer import read_source_headers

    source = service.datastore.image_path(image_id) if image_id else None
    series_uid = str(label.meta.get("SeriesInstanceUID", "")) if hasattr(label, "meta") else ""
    if source is None or not source.is_dir() or not series_uid:
        raise RequestError(
            "output=dicom_seg needs an image that is a DICOM series in the datastore; "
            "use output=image for NIfTI images",
        )
    headers = read_source_headers(sorted(p for p in source.rglob("*") if p.is_file()), series_uid)
    with service.datastore.scratch_file(".dcm") as tmp:
        write_dicom_seg(
            label,
            headers,
            tmp,
            segments=served.info.segments,
            algorithm=AlgorithmInfo(
                name=served.name,
                version=served.info.version,
                parameters=(("weights_sha256", served.loaded().info.weights_sha256),),
            ),
            config=SegExportConfig(series_description=served.name[:64]),
        )
        return Response(
            content=tmp.read_bytes(),
            media_type="application/dicom",
            headers={"content-disposition": f'attachment; filename="{image_id}.dcm"'},
        )

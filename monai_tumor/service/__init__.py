"""The annotation server: MONAI Label's REST API over our bundles, ingest and SEG export.

3D Slicer's MONAI Label module, OHIF's MONAI Label panel and
``monailabel.client.MONAILabelClient`` talk to it unchanged (see docs/annotation.md).
``monai-tumor serve`` runs it with uvicorn; :func:`create_app` builds the FastAPI app for
any ASGI server.

Example::

    from monai_tumor.service import ServiceConfig, create_app
    app = create_app(ServiceConfig(studies="images/", bundles=(Path("bundles/lung_nodule_ct"),),
                                   state_dir=Path("label-state")))
"""

from monai_tumor.service.app import create_app
from monai_tumor.service.config import TOKEN_ENV, ServiceConfig
from monai_tumor.service.server import serve

__all__ = ["TOKEN_ENV", "ServiceConfig", "create_app", "serve"]

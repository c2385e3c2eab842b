"""Public names of ``monai_tumor.pacs`` (lazy_loader stub)."""

from .batch import (
    PacsBatchResult,
    cache_folder,
    outbox_for,
    pull_dimse,
    run_dicomweb_batch,
    run_dimse_batch,
    seg_files,
)
from .cache import (
    InstanceCache,
    safe_uid,
)
from .config import (
    DicomNode,
    DicomwebConfig,
    RetryPolicy,
    TlsConfig,
    check_ae_title,
    parse_node,
)
from .dicomweb import (
    TRANSIENT_HTTP_STATUS,
    DicomwebClient,
)
from .dimse import (
    DimseOptions,
    echo,
    find_series,
    get_series,
    send_files,
)
from .listener import (
    Listener,
    ListenerOptions,
)
from .outbox import (
    Delivery,
    Outbox,
)
from .pull import (
    PulledSeries,
    PullResult,
    find_studies,
    parse_query,
    pull_studies,
    read_study_list,
)
from .retry import (
    TransientPacsError,
    with_retries,
)

__all__ = [
    "TRANSIENT_HTTP_STATUS",
    "Delivery",
    "DicomNode",
    "DicomwebClient",
    "DicomwebConfig",
    "DimseOptions",
    "InstanceCache",
    "Listener",
    "ListenerOptions",
    "Outbox",
    "PacsBatchResult",
    "PullResult",
    "PulledSeries",
    "RetryPolicy",
    "TlsConfig",
    "TransientPacsError",
    "cache_folder",
    "check_ae_title",
    "echo",
    "find_series",
    "find_studies",
    "get_series",
    "outbox_for",
    "parse_node",
    "parse_query",
    "pull_dimse",
    "pull_studies",
    "read_study_list",
    "run_dicomweb_batch",
    "run_dimse_batch",
    "safe_uid",
    "seg_files",
    "send_files",
    "with_retries",
]

"""UniFormer video classification: exact official models, test protocols, training and a CLI."""

from typing import TYPE_CHECKING

from uniformer_cli.lazy import lazy_attributes

if TYPE_CHECKING:
    from uniformer_cli.data.views import load_views
    from uniformer_cli.runtime import configure_runtime
    from uniformer_cli.weights import LoadedModel, load_model, resolve_model

__version__ = "0.1.0"

__getattr__, __dir__ = lazy_attributes(
    __name__,
    {
        ".data.views": ("load_views",),
        ".runtime": ("configure_runtime",),
        ".weights": ("LoadedModel", "load_model", "resolve_model"),
    },
)

__all__ = ["LoadedModel", "__version__", "configure_runtime", "load_model", "load_views", "resolve_model"]

"""UniFormer video classification: exact official models, test protocols, training and a CLI.

The Python API gives the command line's answers:

- `load_model(name_or_path)`: the network in eval mode, with `.labels` and `.protocol`;
- `load_views(video, model.protocol)`: exactly the clips `uniformer predict` feeds that model;
- `load_predictor(name_or_path)`: a callable that ranks a video's classes as `uniformer predict` does.
"""

from typing import TYPE_CHECKING

from uniformer_cli.lazy import lazy_attributes
from uniformer_cli.version import __version__

if TYPE_CHECKING:
    from uniformer_cli.data.views import load_views
    from uniformer_cli.engine.predict import Predictor, load_predictor
    from uniformer_cli.protocol import ViewProtocol
    from uniformer_cli.runtime import configure_runtime
    from uniformer_cli.weights import LoadedModel, load_model, resolve_model

__getattr__, __dir__ = lazy_attributes(
    __name__,
    {
        ".data.views": ("load_views",),
        ".engine.predict": ("Predictor", "load_predictor"),
        ".protocol": ("ViewProtocol",),
        ".runtime": ("configure_runtime",),
        ".weights": ("LoadedModel", "load_model", "resolve_model"),
    },
)

__all__ = [
    "LoadedModel",
    "Predictor",
    "ViewProtocol",
    "__version__",
    "configure_runtime",
    "load_model",
    "load_predictor",
    "load_views",
    "resolve_model",
]

"""Video in, model input out: decoders, temporal sampling, test-time transforms and views.

Loaded on first use, so the dataset tables (`datasets.py`) are readable without torch."""

from typing import TYPE_CHECKING

from uniformer_cli.lazy import lazy_attributes

if TYPE_CHECKING:
    from uniformer_cli.data.sampling import (
        dense_indices,
        random_dense_indices,
        random_segment_indices,
        random_sparse_indices,
        segment_indices,
        sparse_indices,
    )
    from uniformer_cli.data.video import DECODERS, VIDEO_EXTENSIONS, Video, is_frame_folder, open_video
    from uniformer_cli.data.views import load_views, views_from_video

__getattr__, __dir__ = lazy_attributes(
    __name__,
    {
        ".sampling": (
            "dense_indices",
            "random_dense_indices",
            "random_segment_indices",
            "random_sparse_indices",
            "segment_indices",
            "sparse_indices",
        ),
        ".video": ("DECODERS", "VIDEO_EXTENSIONS", "Video", "is_frame_folder", "open_video"),
        ".views": ("load_views", "views_from_video"),
    },
)

__all__ = [
    "DECODERS",
    "VIDEO_EXTENSIONS",
    "Video",
    "dense_indices",
    "is_frame_folder",
    "load_views",
    "open_video",
    "random_dense_indices",
    "random_segment_indices",
    "random_sparse_indices",
    "segment_indices",
    "sparse_indices",
    "views_from_video",
]

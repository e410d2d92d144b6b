"""How a model is run, as plain names: the device, the precision and the engine a user chooses, the
formats a model is exported to, and the licence a pushed model's card names unless told otherwise. The
one home of these choices: the code that implements them (`device`,
`models.fast`, `engine.inference`, `engine.export`) and the CLI's options read them from here, without
importing torch."""

from __future__ import annotations

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
# "auto": exact float32 on the CPU, the device's half-precision autocast on CUDA / MPS; "fp32" and "bf16"
# run the fast inference path at that precision (`models.fast.optimize_for_inference`).
PRECISIONS = ("auto", "fp32", "bf16")
# What runs the model: "auto" decides per machine (`engine.openvino_engine.auto_model`).
ENGINES = ("auto", "torch", "openvino")
EXPORT_FORMATS = ("onnx", "openvino")
# `uniformer push --license`: the official UniFormer code and weights are MIT (Sense-X/UniFormer, LICENSE).
DEFAULT_LICENSE = "mit"

"""Importing published weights, on two independent axes.

Containers (how tensors are stored): safetensors, ``.pth`` read without unpickling code, ONNX
graphs with their initializers, ncnn ``.param``/``.bin``. Name layouts (how tensors are named):
torchvision, the SimpleBaseline release, MMPose (:mod:`.layouts`), and graph order for ONNX and
ncnn files, which carry no PyTorch names (:mod:`.onnx_graph`, :mod:`.ncnn`).
"""

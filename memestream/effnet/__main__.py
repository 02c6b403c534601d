"""``python -m memestream.effnet DEST.onnx``: export the pretrained EfficientNet-Lite0 graph."""
from __future__ import annotations

import sys

from memestream.effnet.graph import main

if __name__ == "__main__":
    sys.exit(main())

"""memestream: classify meme images continuously with Spark Structured Streaming.

The shared core lives here: decoding and featurizing (one piece of code for training
and streaming), the Spark ML featurizer stage, the versioned model store, the Spark
session factory and the small error hierarchy every console script reports through.
"""
from __future__ import annotations

__version__ = "0.1.0"

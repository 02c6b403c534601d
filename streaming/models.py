"""Hold the model a stream scores with, and switch versions at batch boundaries.

``meme-train`` marks a new version current by replacing the store's ``CURRENT`` file; the
stream checks that file (a stat and a small read) before each batch. A version that
fails to load is logged once and the old model stays in use.
"""
from __future__ import annotations

import logging
from pathlib import Path

from memestream import uris
from memestream.errors import ModelError
from memestream.modelstore import CURRENT_FILE, LoadedModel, ModelStore, load_model

log = logging.getLogger(__name__)


class ModelHolder:
    """The current model, reloaded when the store's current version changes (unless pinned)."""

    def __init__(self, model_dir: str | Path, pinned_version: str | None = None) -> None:
        # a Hadoop URI stays a string (memestream.uris); CURRENT is then read through Hadoop
        self.model_dir = str(model_dir) if uris.is_uri(model_dir) else Path(model_dir)
        self.pinned = pinned_version
        self.model: LoadedModel = load_model(self.model_dir, pinned_version)
        self._failed: set[str] = set()
        self.switches = 0
        log.info("scoring with model %s (%s, classes %s) from %s", self.model.version, self.model.name,
                 ", ".join(self.model.classes), self.model.path)

    def _wanted(self) -> str | None:
        if self.pinned:
            return None
        if isinstance(self.model_dir, str):
            return ModelStore(self.model_dir).current()
        if not (self.model_dir / CURRENT_FILE).exists():
            return None
        return ModelStore(self.model_dir).current()

    def refresh(self) -> LoadedModel:
        """Return the model to use for the next batch, switching if a new one is current."""
        wanted = self._wanted()
        if wanted and wanted != uris.name(self.model.path) and wanted not in self._failed:
            try:
                new = load_model(self.model_dir, wanted)
            except ModelError as exc:
                self._failed.add(wanted)
                log.error("new model version %s failed to load; keeping %s: %s", wanted, self.model.version, exc)
                return self.model
            if new.classes != self.model.classes:
                log.warning("model %s has classes %s (was %s)", new.version, new.classes, self.model.classes)
            log.info("switching model %s -> %s at the next batch", self.model.version, new.version)
            self.model = new
            self.switches += 1
        return self.model

"""The error a published version's contract raises, in a module of its own so that both halves
of the contract raise it: the metadata (don_core.artifact) and the decision rule it carries
(don_core.calibration), which artifact checks at load."""
from __future__ import annotations


class ArtifactError(Exception):
    """A version directory that must not be served: corrupt, incomplete or for other features."""

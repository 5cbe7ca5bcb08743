"""Implementation of :mod:`align.similarity` (private; import from ``align.similarity``)."""

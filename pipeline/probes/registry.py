"""The probe registry (one instance for this plug-in kind)."""

from pipeline.registry import Registry

PROBES: Registry = Registry("probe")

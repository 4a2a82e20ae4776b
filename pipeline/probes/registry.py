"""The probe registry (one instance for this plug-in kind)."""

from slidemil.core.registry import Registry

PROBES: Registry = Registry("probe")

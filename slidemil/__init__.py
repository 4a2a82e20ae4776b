"""slidemil: whole-slide images → tiles → CONCH features → patient-grouped folds → MIL heads and probes.

The installed package is one namespace: ``slidemil.core`` (errors, registry, atomic writes, params reading;
imports nothing else of the project), ``slidemil.extract``, ``slidemil.splits``, ``slidemil.mil_models`` (each
may import ``slidemil.core`` only, and ``extract``/``splits`` nothing of each other beyond what they declare)
and ``slidemil.pipeline`` (the CLI and stages, which may import everything).
"""

__version__ = "0.3.0"

"""The small core every slidemil package may import: errors, the plug-in registry, atomic writes, params reading.

It imports no other slidemil package (and neither pandas, torch nor mlflow).
"""

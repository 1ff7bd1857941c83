"""nmc: MCollective re-made as a NATS microservice mesh.

The version lives here and only here; packaging reads it from this module.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]

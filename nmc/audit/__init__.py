"""nmc.audit."""

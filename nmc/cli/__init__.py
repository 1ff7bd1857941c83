"""nmc.cli."""

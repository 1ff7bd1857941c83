"""nmc.services.agents."""

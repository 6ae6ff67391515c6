"""Pipeline stages, one module each; every stage reads a validated recipe and writes a model dir."""

"""A third-party assay plugin, as a separate package would ship one."""

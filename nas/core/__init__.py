"""The bottom layer: the one vocabulary (ArchConfig and its exact accounting), user errors, reading the files
users write, and where nas keeps its data. Everything else in nas imports from here; this imports nothing
of nas above it."""

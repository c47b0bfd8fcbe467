"""Moving frames between workers.

``_seam``: what runners see of a transport (``SourceBuffers`` for sources, an
``Exporter`` for producers with consumers in other processes; nothing at all
in-process). ``_shm``: frames in shared-memory slots, release flags in columns
the transport owns (``FlagColumns``), and the cleanup of segments.
"""

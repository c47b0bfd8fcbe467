"""Moving frames between workers: shared-memory slots and the wire format."""

"""Built-in vision stages."""

__all__: list[str] = []

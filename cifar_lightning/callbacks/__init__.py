"""Our own Lightning callbacks, listed by name in ``conf/callbacks/``."""

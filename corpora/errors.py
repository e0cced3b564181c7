"""The store's error type, apart so that every store module (lock, catalog, SQL guard) can raise it."""


class StoreError(Exception):
    """A problem with the store that the user can fix; the message says how."""

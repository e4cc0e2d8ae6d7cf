"""The store: latest results as an immutable snapshot, swapped atomically; SQLite history."""

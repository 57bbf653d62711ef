"""CAS node: a multi-site availability (free/busy) proxy."""

__version__ = "0.1.0"

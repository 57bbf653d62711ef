"""Lab helpers: real servers (Radicale, ...) started on loopback for `cas lab` and the tests."""

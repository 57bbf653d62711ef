"""The site map: sites, their nodes and backends, and the mailbox directory.

This package never imports `cas`.
"""

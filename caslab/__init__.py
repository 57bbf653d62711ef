"""The lab: tools for running and testing the product, not the product.

`cas lab` (`caslab.runner`) runs a whole multi-site cluster on loopback; the parts it and
`compose.yaml` use are here too: Radicale and redis-server as managed processes, the old-server
emulator (`caslab.oldserver`), a DNS responder for SRV records (`caslab.dnsserver`), a fault
proxy (`caslab.faultproxy`), a cluster CA (`caslab.tls`) and seeded calendars (`caslab.seed`).
The node package `cas` never imports this package; it comes with the `lab` extra's
dependencies (Radicale).
"""

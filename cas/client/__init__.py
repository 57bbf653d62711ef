"""`cas lookup`, the command-line client: discovery like a real client, EWS, a readable timeline."""

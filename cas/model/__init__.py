"""Pure values of the availability domain: free/busy data, requests and per-mailbox results."""

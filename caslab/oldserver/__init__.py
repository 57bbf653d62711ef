"""The old server's side of legacy free/busy: MS-OXOPFFB month blocks, the message store, and
the `/public` emulator (`cas legacy-server`) the lab and the tests run as a real server.

`months` is pure encoding; `store` keeps messages on disk; `server` is the HTTP front;
`directory` reads the SMTP -> legacy DN file the emulator is started with.
"""

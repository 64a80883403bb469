"""The store's own Redis client: RESP2 over a raw socket, without redis-py (private).

* :mod:`.resp`: encoding commands into the pieces a socket sends;
* :mod:`.connection`: one connection (TCP, unix socket or TLS), its replies, its errors;
* :mod:`.pool`: the connections of one process, lent to threads.

It moves a large value with one copy on each side of the socket and raises this project's
errors (:mod:`proxystore.exceptions`), once, naming the server.
"""

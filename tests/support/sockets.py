"""Raw sockets for the tests that play a client HTTP libraries will not: one that vanishes."""

import socket
import struct


def close_with_reset(sock: socket.socket) -> None:
    """Close with an RST instead of a FIN (SO_LINGER 0): the client vanished, it did not leave."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()

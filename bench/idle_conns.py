#!/usr/bin/env python3
"""Hold N idle keep-alive HTTP/1.1 client connections open against a server.

Opens N connections to HOST:PORT one after another, sends one complete
`GET PATH` (with the given Host header, keep-alive) on each and reads the
whole response, then keeps every connection open and idle. Prints `open=<n>`
(the connections that got a complete response and are still open) on stdout
once all are established, then waits for SIGTERM/SIGINT (or --hold SECONDS)
and prints `still_open=<n>`: the connections the server had not closed by
then. Used to measure a proxy's memory per idle connection:
(RSS after - RSS before) / N.

  bench/idle_conns.py 127.0.0.91:8080 -n 10000 --host-header example.com

Needs N + a few file descriptors: raises RLIMIT_NOFILE and exits with status 2
and a message if it cannot. Python 3 standard library only.
"""
import argparse
import resource
import select
import signal
import socket
import sys
import time


def raise_fd_limit(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft >= need:
        return
    if hard == resource.RLIM_INFINITY or hard >= need:
        new = (need, hard)
    else:
        new = (need, need)  # raising the hard limit needs CAP_SYS_RESOURCE
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, new)
    except (ValueError, OSError) as e:
        sys.exit(f"idle_conns: cannot raise the open-file limit to {need} "
                 f"(soft {soft}, hard {hard}): {e}; run as root with "
                 f"CAP_SYS_RESOURCE, raise `ulimit -Hn`, or use a smaller -n")


def read_response(sock, deadline):
    """Reads one HTTP response; True if complete and the connection may stay open."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = recv_some(sock, deadline)
        if not chunk:
            return False
        buf += chunk
        if len(buf) > 65536:
            return False
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    parts = lines[0].split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        return False
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip().lower()
    if b"close" in headers.get(b"connection", b""):
        return False
    if status in (204, 304) or 100 <= status < 200:
        return True
    if b"chunked" in headers.get(b"transfer-encoding", b""):
        # Enough for a test: read until the last chunk and the empty trailer.
        while not (body == b"0\r\n\r\n" or body.endswith(b"\r\n0\r\n\r\n")):
            chunk = recv_some(sock, deadline)
            if not chunk:
                return False
            body += chunk
        return True
    if b"content-length" not in headers:
        return False  # body until close: not a keep-alive response
    length = int(headers[b"content-length"])
    while len(body) < length:
        chunk = recv_some(sock, deadline)
        if not chunk:
            return False
        body += chunk
    return len(body) == length


def recv_some(sock, deadline):
    left = deadline - time.monotonic()
    if left <= 0:
        return b""
    sock.settimeout(left)
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def still_open(socks):
    """Counts the sockets the peer has not closed (no hang-up, no EOF pending)."""
    n = 0
    poller = select.poll()
    by_fd = {}
    for s in socks:
        poller.register(s.fileno(), select.POLLIN | select.POLLRDHUP)
        by_fd[s.fileno()] = s
    ready = dict(poller.poll(0))
    for fd, s in by_fd.items():
        ev = ready.get(fd, 0)
        if ev & (select.POLLRDHUP | select.POLLHUP | select.POLLERR):
            continue
        if ev & select.POLLIN:
            try:
                if not s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                    continue
            except OSError:
                continue
        n += 1
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("target", metavar="HOST:PORT")
    ap.add_argument("-n", "--connections", type=int, default=10000)
    ap.add_argument("--host-header", default=None,
                    help="Host header (default: HOST:PORT)")
    ap.add_argument("--path", default="/")
    ap.add_argument("--timeout", type=float, default=5.0,
                    help="seconds per connection for connect + response")
    ap.add_argument("--hold", type=float, default=None,
                    help="exit after this many seconds instead of waiting for SIGTERM")
    args = ap.parse_args()

    host, _, port = args.target.rpartition(":")
    if not host or not port.isdigit():
        ap.error("target must be HOST:PORT")
    port = int(port)
    host_header = args.host_header or args.target
    raise_fd_limit(args.connections + 64)

    stop = []
    def on_signal(signum, _frame):
        stop.append(signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    request = (f"GET {args.path} HTTP/1.1\r\nHost: {host_header}\r\n"
               f"User-Agent: idle_conns\r\nAccept: */*\r\n\r\n").encode()
    socks, failed, first_error = [], 0, None
    t0 = time.monotonic()
    for _ in range(args.connections):
        if stop:
            break
        deadline = time.monotonic() + args.timeout
        try:
            s = socket.create_connection((host, port), timeout=args.timeout)
        except OSError as e:
            failed += 1
            first_error = first_error or f"connect: {e}"
            continue
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            s.sendall(request)
            ok = read_response(s, deadline)
        except OSError as e:
            ok = False
            first_error = first_error or f"request: {e}"
        if ok:
            socks.append(s)
        else:
            failed += 1
            first_error = first_error or "no complete keep-alive response"
            s.close()
    took = time.monotonic() - t0
    if failed:
        print(f"idle_conns: {failed} of {args.connections} connections failed "
              f"(first: {first_error})", file=sys.stderr)
    print(f"idle_conns: {len(socks)} connections in {took:.1f} s", file=sys.stderr)
    print(f"open={still_open(socks)}", flush=True)

    end = None if args.hold is None else time.monotonic() + args.hold
    while not stop and (end is None or time.monotonic() < end):
        time.sleep(0.1)
    print(f"still_open={still_open(socks)}", flush=True)
    for s in socks:
        s.close()
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())

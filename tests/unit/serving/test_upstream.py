import asyncio

import pytest

from opensage.serving.upstream import UpstreamConnectError, UpstreamPool


async def _server(responses: list[bytes], close_after_first: bool = False):
    connections = []

    async def handle(reader, writer):
        connections.append(writer)
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int([h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")][0]
                         .split(b":")[1])
            await reader.readexactly(length)
            writer.write(responses.pop(0))
            await writer.drain()
            if close_after_first:
                writer.close()
                return

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], connections


def test_post_content_length_and_chunked_reuse_one_connection():
    async def main():
        server, port, conns = await _server([
            b"HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\nContent-Length: 4\r\n\r\n0.5\n",
            b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nbad\r\n0\r\n\r\n"])
        pool = UpstreamPool()
        url = f"http://127.0.0.1:{port}"
        first = await pool.post(url, "/invocations", b"1,2", {"Content-Type": "text/csv"}, timeout=5)
        second = await pool.post(url, "/invocations", b"x" * 70000, {}, timeout=5)
        await pool.close()
        server.close()
        return first, second, len(conns)

    first, second, connections = asyncio.run(main())
    assert (first.status_code, first.content, first.headers["content-type"]) == (200, b"0.5\n", "text/csv")
    assert (second.status_code, second.text) == (400, "bad")
    assert connections == 1


def test_stale_keepalive_connection_is_retried_on_a_fresh_one():
    async def main():
        ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        server, port, conns = await _server([ok, ok], close_after_first=True)
        pool = UpstreamPool()
        url = f"http://127.0.0.1:{port}"
        await pool.post(url, "/invocations", b"a", {}, timeout=5)
        await asyncio.sleep(0.05)
        again = await pool.post(url, "/invocations", b"b", {}, timeout=5)
        await pool.close()
        server.close()
        return again, len(conns)

    again, connections = asyncio.run(main())
    assert again.content == b"ok" and connections == 2


def test_refused_connection_raises_connect_error():
    async def main():
        pool = UpstreamPool()
        await pool.post("http://127.0.0.1:1", "/invocations", b"", {}, timeout=2)

    with pytest.raises(UpstreamConnectError):
        asyncio.run(main())

"""UpstreamPool's protocol parser: responses cut anywhere, close-delimited bodies, timeouts, garbage."""

import asyncio

import pytest

from opensage.serving.upstream import MalformedResponse, UpstreamConnectError, UpstreamPool, _ResponseParser


def _feed_in_pieces(raw: bytes, size: int):
    parser = _ResponseParser()
    done = None
    for i in range(0, len(raw), size):
        assert done is None, "complete before the last byte"
        done = parser.feed(raw[i:i + size])
    return done


@pytest.mark.parametrize("size", [1, 2, 7, 1000])
def test_parser_chunked_response_cut_anywhere_is_reassembled(size):
    raw = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Amzn-SageMaker-Custom-Attributes: a=1\r\n\r\n"
           b"4;ext=1\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n")
    response, keep = _feed_in_pieces(raw, size)
    assert (response.status_code, response.content, keep) == (200, b"abcdefg", True)
    assert response.headers["x-amzn-sagemaker-custom-attributes"] == "a=1"


@pytest.mark.parametrize("size", [1, 5, 1000])
def test_parser_content_length_response_cut_anywhere_is_complete_at_last_byte(size):
    raw = b"HTTP/1.1 424 Failed Dependency\r\ncontent-length: 5\r\nConnection: close\r\n\r\nerror"
    response, keep = _feed_in_pieces(raw, size)
    assert (response.status_code, response.text, keep) == (424, "error", False)


def test_parser_http_1_0_and_bare_newlines_are_not_kept_alive():
    response, keep = _ResponseParser().feed(b"HTTP/1.0 200 OK\nContent-Length: 2\n\nok")
    assert (response.content, keep) == (b"ok", False)


def test_parser_close_delimited_body_ends_at_eof():
    parser = _ResponseParser()
    assert parser.feed(b"HTTP/1.1 200 OK\r\n\r\npart one, ") is None
    assert parser.feed(b"part two") is None
    response, keep = parser.eof()
    assert (response.content, response.headers["connection"], keep) == (b"part one, part two", "close", False)


async def _serve(reply):
    """A server that answers each request with ``reply(n)`` (bytes, or None to stay silent)."""
    count = 0

    async def handle(reader, writer):
        nonlocal count
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            length = int(next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))
                         .split(b":")[1])
            await reader.readexactly(length)
            count += 1
            answer = reply(count)
            if answer is None:
                continue
            writer.write(answer)
            await writer.drain()
            if b"Content-Length" not in answer and b"chunked" not in answer:
                writer.close()
                return

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def test_post_close_delimited_response_is_read_to_eof_and_not_reused():
    async def main():
        server, url = await _serve(lambda n: b"HTTP/1.1 200 OK\r\n\r\n" + str(n).encode() * 3)
        pool = UpstreamPool()
        first = await pool.post(url, "/invocations", b"a", {}, timeout=5)
        second = await pool.post(url, "/invocations", b"b", {}, timeout=5)
        await pool.close()
        server.close()
        return first, second

    first, second = asyncio.run(main())
    assert (first.content, second.content) == (b"111", b"222")


def test_post_silent_server_raises_timeout_error_and_next_request_uses_a_new_connection():
    async def main():
        ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        server, url = await _serve(lambda n: None if n == 1 else ok)
        pool = UpstreamPool()
        with pytest.raises(TimeoutError):
            await pool.post(url, "/invocations", b"a", {}, timeout=0.2)
        again = await pool.post(url, "/invocations", b"b", {}, timeout=5)
        await pool.close()
        server.close()
        return again

    assert asyncio.run(main()).content == b"ok"


def test_post_garbage_response_raises_malformed_response():
    async def main():
        server, url = await _serve(lambda n: b"HTTP/1.1 abc\r\nContent-Length: 0\r\n\r\n")
        pool = UpstreamPool()
        try:
            await pool.post(url, "/invocations", b"a", {}, timeout=5)
        finally:
            await pool.close()
            server.close()

    with pytest.raises(MalformedResponse):
        asyncio.run(main())


def test_post_server_closing_mid_response_on_fresh_connection_is_connect_error():
    async def main():
        async def handle(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        pool = UpstreamPool()
        try:
            await pool.post(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", "/invocations", b"", {},
                            timeout=5)
        finally:
            await pool.close()
            server.close()

    with pytest.raises(UpstreamConnectError, match="closed before a response"):
        asyncio.run(main())


def test_post_sends_the_replica_token_registered_for_its_url_and_a_new_one_after_replacement():
    from opensage.serving.upstream import TOKEN_HEADER, set_replica_token

    seen: list[bytes] = []

    async def main():
        async def handle(reader, writer):
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                await reader.readexactly(1)
                seen.append(head)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        pool = UpstreamPool()
        set_replica_token(url, "first-token")
        await pool.post(url, "/invocations", b"a", {"Content-Type": "text/csv"}, timeout=5)
        set_replica_token(url, "second-token")  # a new replica on the same port
        await pool.post(url, "/invocations", b"b", {}, timeout=5)
        set_replica_token(url, None)
        await pool.post(url, "/invocations", b"c", {}, timeout=5)
        await pool.close()
        server.close()

    asyncio.run(main())
    header = TOKEN_HEADER.lower().encode()
    tokens = [[line.split(b":", 1)[1].strip() for line in head.split(b"\r\n") if line.lower().startswith(header)]
              for head in seen]
    assert tokens == [[b"first-token"], [b"second-token"], []]


def test_post_to_a_url_with_a_registered_unix_socket_goes_over_it_with_the_token(tmp_path):
    from opensage.serving.upstream import TOKEN_HEADER, set_replica_socket, set_replica_token

    seen: list[bytes] = []

    async def main():
        async def handle(reader, writer):
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(1)
            seen.append(head)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nunix")
            await writer.drain()
            writer.close()

        path = str(tmp_path / "replica.sock")
        server = await asyncio.start_unix_server(handle, path)
        url = "http://127.0.0.1:9"  # nothing listens on this TCP port: only the Unix socket can answer
        pool = UpstreamPool()
        set_replica_token(url, "unix-token")
        set_replica_socket(url, path)
        try:
            response = await pool.post(url, "/invocations", b"a", {"Content-Type": "text/csv"}, timeout=5)
        finally:
            set_replica_socket(url, None)
            set_replica_token(url, None)
            await pool.close()
            server.close()
        assert (response.status_code, response.content) == (200, b"unix")
        with pytest.raises(UpstreamConnectError):  # unregistered: TCP, where nothing listens
            await UpstreamPool().post(url, "/invocations", b"a", {}, timeout=5)

    asyncio.run(main())
    assert f"{TOKEN_HEADER}: unix-token".encode() in seen[0]


@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\nContent-Length: 5\r\n\r\n0.25\n",
    b"HTTP/1.1 424 Failed\r\ncontent-length: 4\r\nConnection: close\r\nX-A:  b \r\n\r\nboom",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\na\n\nbEXTRA",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
])
def test_response_in_one_piece_parses_as_byte_by_byte(raw):
    whole = _ResponseParser().feed(raw)
    parser, piecewise = _ResponseParser(), None
    for i in range(len(raw)):
        piecewise = parser.feed(raw[i:i + 1])
        if piecewise is not None:
            break
    assert whole is not None and piecewise is not None
    (a, keep_a), (b, keep_b) = whole, piecewise
    assert (a.status_code, a.headers, a.content, keep_a) == (b.status_code, b.headers, b.content, keep_b)


def test_response_head_complete_body_short_waits_for_the_rest():
    parser = _ResponseParser()
    assert parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n012") is None
    response, keep = parser.feed(b"345")
    assert response.content == b"012345" and keep

"""wss:// against the real dbx binary serving TLS (certificate from scripts/dev-cert.sh)."""
from __future__ import annotations

import asyncio
import ssl

import pytest

from dbx_client import DBXError, DBXWebSocket

from conftest import API_KEY, Server


def ctx(server: Server) -> ssl.SSLContext:
    assert server.certs
    return ssl.create_default_context(cafile=str(server.certs / "ca.pem"))


async def test_set_get_watch_over_wss(tls_server: Server) -> None:
    async with DBXWebSocket(tls_server.url, api_key=API_KEY, ssl=ctx(tls_server), reconnect=False) as a, \
            DBXWebSocket(tls_server.url, api_key=API_KEY, ssl=ctx(tls_server), reconnect=False) as b:
        await a.key.watch(["py:tls"])
        stream = a.events("keyspace")
        await b.string.set("py:tls", "over-tls")
        assert (await b.string.get("py:tls"))["value"] == "over-tls"
        ev = await asyncio.wait_for(stream.__anext__(), 5)
        assert ev["key"] == "py:tls"


async def test_untrusted_certificate_is_refused(tls_server: Server) -> None:
    dbx = DBXWebSocket(tls_server.url, api_key=API_KEY, ssl=ssl.create_default_context(), reconnect=False,
                       connect_timeout=3)
    with pytest.raises((DBXError, ssl.SSLError, OSError)):
        await dbx.connect()
    await dbx.disconnect()


async def test_ssl_on_a_ws_url_is_an_error(server: Server) -> None:
    dbx = DBXWebSocket(server.url, api_key=API_KEY, ssl=ssl.create_default_context(), reconnect=False)
    with pytest.raises(DBXError):
        await dbx.connect()
    await dbx.disconnect()

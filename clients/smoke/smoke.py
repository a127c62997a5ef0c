"""Smoke test of the installed wheel (run with a fresh virtualenv's python, from a
directory outside the source tree): import by package name, talk to a real server.
    DBX_URL=ws://127.0.0.1:PORT/ws python smoke.py
"""
import asyncio
import os
import typing

import dbx_client
from dbx_client import DBXError, DBXWebSocket


async def main() -> None:
    url = os.environ["DBX_URL"]
    assert "site-packages" in dbx_client.__file__, f"dbx_client must be installed, not the source tree: {dbx_client.__file__}"
    async with DBXWebSocket(url) as dbx:
        w = await dbx.key.watch(["smoke:py"])
        assert w["watching"] == ["smoke:py"], w
        assert (await dbx.string.set("smoke:py", "hello", ttl=60))["set"] is True
        got = await dbx.string.get("smoke:py")
        assert got["value"] == "hello", got
        try:
            await dbx.string.get("smoke:missing")
            raise AssertionError("expected not_found")
        except DBXError as e:
            assert e.code == "not_found", e
    # Typed results: the helpers' return annotations resolve to TypedDicts.
    hints = typing.get_type_hints(type(dbx.string).get)
    assert set(typing.get_type_hints(hints["return"])) == {"value", "ttl"}, hints
    print(f"python smoke: dbx-client {dbx_client.__version__} from {dbx_client.__file__}: ok")


asyncio.run(main())

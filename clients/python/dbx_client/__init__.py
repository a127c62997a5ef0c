"""DBX client: asyncio, on the `websockets` package.

    async with DBXWebSocket("ws://127.0.0.1:8080/ws", api_key="...") as dbx:
        await dbx.string.set("greeting", "hello")
        print((await dbx.string.get("greeting"))["value"])
"""
from ._generated import METHOD_NAMES
from .client import DBXClient, DBXError, DBXWebSocket, DBXWebSocketPool, EventStream, jwt_expiry

__all__ = ["DBXClient", "DBXError", "DBXWebSocket", "DBXWebSocketPool", "EventStream", "METHOD_NAMES", "jwt_expiry"]
__version__ = "0.1.0"

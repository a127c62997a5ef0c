"""DBX client: asyncio, on the `websockets` package.

    async with DBXWebSocket("ws://127.0.0.1:8080/ws", api_key="...") as dbx:
        await dbx.string.set("greeting", "hello")
        print((await dbx.string.get("greeting"))["value"])
"""
from ._generated import METHOD_NAMES, KeyspaceEvent, WatchResult, WatchValue, ZMember
from .client import DBXClient, DBXError, DBXWebSocket, DBXWebSocketPool, EventStream, jwt_expiry

__all__ = [
    "DBXClient", "DBXError", "DBXWebSocket", "DBXWebSocketPool", "EventStream", "KeyspaceEvent", "METHOD_NAMES",
    "WatchResult", "WatchValue", "ZMember", "jwt_expiry",
]
# Equal to the server's version (Cargo.toml); set by clients/gen-methods.mjs.
__version__ = "0.1.0"

"""MCP (Model Context Protocol) in Apiary: hives as MCP tools on apiaryd (``/mcp/cells/{cell}``).

:mod:`apiary.mcp.protocol` is the server side of MCP's Streamable HTTP transport, handshake era
(protocol revisions 2025-06-18 and 2025-11-25, JSON answers, no server-initiated messages), over
any :class:`~apiary.mcp.protocol.ToolSet`; :mod:`apiary.mcp.hives` is the tool set of a cell's
exposed hives. See docs/interop.md.
"""

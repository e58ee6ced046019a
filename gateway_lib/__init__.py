"""agent-mcp-gateway: one stdio MCP server that stands in for many."""

__version__ = "0.1.0"

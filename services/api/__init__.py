"""unmask's inference service: REST, Server-Sent Events and WebSocket over a batching engine."""

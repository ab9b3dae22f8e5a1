"""The HTTP service: FastAPI app, routes, backends (embedded engine or Redis workers), web page."""

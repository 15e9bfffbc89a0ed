"""The example HTTP service (examples/service) under a real uvicorn server, over real HTTP."""

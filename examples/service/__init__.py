"""An example HTTP service over ticketing.aio (FastAPI, uvicorn): see README.md here."""

"""REST API v1 (FastAPI): routers by resource, schemas, auth, error mapping."""

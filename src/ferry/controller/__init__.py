"""The controller process: composition of database, services, loops and the API server."""

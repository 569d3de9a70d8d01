"""Pure domain: entities' states, their transitions, validation and errors. No I/O here."""

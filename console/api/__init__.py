"""JSON APIs: the wallet API (service key) and, later, the staff API (bearer tokens)."""

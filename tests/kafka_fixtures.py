"""Kafka broker fixtures (filled in by the Kafka work)."""

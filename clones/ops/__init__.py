"""Keeping the service alive: recovery, health, heartbeats."""

"""Telling a job's owner that it ended: webhooks and email."""

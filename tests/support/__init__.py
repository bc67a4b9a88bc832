"""Shared by the tests and scripts/: git servers, engines, repositories."""

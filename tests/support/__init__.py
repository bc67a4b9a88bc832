"""Shared by the tests and scripts/: git servers, engines, repositories."""

from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent.parent

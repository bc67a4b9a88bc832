"""What is let in and out: the URL policy, pinned HTTP, per-job tokens."""

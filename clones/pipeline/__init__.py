"""A clone's way from a URL to an archive: refs, git in a container, packing, snapshots."""

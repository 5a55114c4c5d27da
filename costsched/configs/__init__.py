"""Configs shipped with the package: the price catalog and example jobs (symlinks to the
repository's ``configs/``; a wheel carries the files themselves)."""

"""Trace-driven cluster simulator over the Pollux profiles (pure: no ``ray``)."""

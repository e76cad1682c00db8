"""Sample data: synthetic skies with a known true background (scenes, the demo master)."""

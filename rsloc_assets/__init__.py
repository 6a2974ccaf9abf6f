"""rsloc: geo-localization of remote-sensing images against a tiled satellite gallery."""

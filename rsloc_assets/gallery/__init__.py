"""The gallery: reading RSLoc `ge_tiles` SQLite and MBTiles, building one, and its manifest."""

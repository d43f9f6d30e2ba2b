"""Gymnasium environments and wrappers: humanoid, tabletop cloth/push, NetHack, text games, rendering."""

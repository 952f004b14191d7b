"""Helpers with no model knowledge: progress bars, atomic output directories, CPU threads."""

"""HTML console: one blueprint per workbench, guarded as a whole."""

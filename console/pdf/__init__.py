"""Pure PDF builders: data in, bytes out (reportlab)."""

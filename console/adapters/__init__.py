"""External systems behind adapters: a working local default and a real HTTP implementation."""

"""drift-acme: the ACME microscope for drift_framework (a template for vendor plugins)."""
__version__ = "0.1.0"

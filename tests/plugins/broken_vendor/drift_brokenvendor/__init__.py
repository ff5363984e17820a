"""A third-party plugin that fails on import (the registry must skip it)."""
raise RuntimeError("vendor SDK not found")

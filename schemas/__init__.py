"""SpineForge data contracts: one source of truth for names, keys, columns and the build config.

Data files beside this module (naming rules, label tables, default configs) can be extended by a
data engineer without touching code.
"""
from importlib.resources import files
from pathlib import Path

SCHEMA_DIR = Path(str(files(__name__)))
SCHEMA_VERSION = (SCHEMA_DIR / "SCHEMA_VERSION").read_text().strip()

__all__ = ["SCHEMA_DIR", "SCHEMA_VERSION"]

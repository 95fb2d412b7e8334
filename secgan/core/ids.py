"""Identifier formats, one owner each: configs, the manifest, the CLI and the run config import them."""

from __future__ import annotations

import re

# a site's name (manifest entry, key file stem): lower-case, 1-64 characters, starting alphanumeric
SITE_ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# a run id or federation name: 1-64 of letters, digits, '.', '_', '-'
RUN_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")

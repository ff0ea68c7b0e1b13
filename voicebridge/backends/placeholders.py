"""`{placeholders}` in a system prompt, filled from the call's context (`CallInfo.context`).

A regular expression over `{name}`, name being letters, digits and `_`: never `str.format`, whose
attribute and index access (`{0.__class__}`) would run whatever a template says, and which fails on any
other brace. A placeholder whose key the call's context lacks is left as written, so a prompt with braces
of its own is never changed and the one reading the request sees which key was missing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_]+)\}")


def fill_placeholders(template: str, context: Mapping[str, str]) -> str:
    """`template` with each `{name}` whose name is in `context` replaced by its value, once: a value that
    itself reads `{other}` is not expanded again."""
    if not context or "{" not in template:
        return template
    return PLACEHOLDER.sub(lambda found: context.get(found.group(1), found.group(0)), template)

"""Text formatting actions: an example of an Attune action pack in Python."""

import re
import textwrap

import attune
import wit_world
from componentize_py_types import Err
from wit_world import Counts


class WitWorld(wit_world.WitWorld):
    def echo(self, message: str) -> str:
        print(message)
        return message

    def slugify(self, text: str) -> str:
        return "-".join(re.findall(r"[a-z0-9]+", text.lower()))

    def wrap(self, text: str, width: int) -> list[str]:
        if not 10 <= width <= 200:
            raise Err(f"width must be between 10 and 200, got {width}")
        lines = textwrap.wrap(text, width)
        attune.info("wrapped", width=width, lines=len(lines))
        return lines

    def count(self, text: str) -> Counts:
        return Counts(len(text.splitlines()), len(text.split()), len(text))

import attune
import wit_world
from componentize_py_types import Err


class WitWorld(wit_world.WitWorld):
    def greet(self, name: str, times: int | None) -> str:
        times = 1 if times is None else times
        if times > 10:
            raise Err(f"times must be at most 10, got {times}")
        attune.info("greeting", name=name, times=times)
        return ", ".join([f"hello, {name}"] * times)

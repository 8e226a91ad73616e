import attune
import wit_world
from componentize_py_types import Err


class WitWorld(wit_world.WitWorld):
    def fetch(self, url: str) -> str:
        headers = {"user-agent": "attune"}
        try:
            headers["authorization"] = f"Bearer {attune.secret('api_token')}"
        except Err:
            pass  # no token granted: ask without one
        try:
            reply = attune.get(url, headers=headers)
        except attune.HttpError as e:
            raise Err(str(e))
        attune.info(f"{url} answered {reply.status}")
        return f"{reply.status} {reply.text()}"

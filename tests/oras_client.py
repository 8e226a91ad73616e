"""Pulls or pushes a Wasm component with the `oras` Python package, a
registry client Attune did not write, over plain HTTP (a loopback registry).

    oras_client.py pull HOST/REPO:TAG OUTDIR     prints the pulled paths
    oras_client.py push HOST/REPO:TAG FILE.wasm  as the CNCF Wasm layout

Run with the venv's Python from the directory holding FILE.wasm (oras
pushes only files under the working directory).
"""

import hashlib
import json
import os
import sys

import oras.client


def main():
    mode, target, path = sys.argv[1:4]
    client = oras.client.OrasClient(insecure=True)
    if mode == "pull":
        print(json.dumps(client.pull(target=target, outdir=path)))
    elif mode == "push":
        with open("config.json", "w") as f:
            with open(path, "rb") as wasm:
                digest = "sha256:" + hashlib.sha256(wasm.read()).hexdigest()
            json.dump({"architecture": "wasm", "os": "wasip2", "layerDigests": [digest]}, f)
        client.push(
            target=target,
            files=[f"{os.path.basename(path)}:application/wasm"],
            manifest_config="config.json:application/vnd.wasm.config.v0+json",
            quiet=True,
        )
        print(json.dumps({"pushed": target}))
    else:
        sys.exit(f"unknown mode {mode}")


main()

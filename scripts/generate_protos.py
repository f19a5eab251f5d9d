"""Generate the `_pb2.py` modules and their .pyi stubs from podflame's .proto files.

The generated files are committed next to their .proto, so installing podflame needs
no protoc; run this after editing a .proto (`.venv/bin/python scripts/generate_protos.py`).
tests/server/test_querier_proto.py fails when the committed files differ from what
this produces. grpcio-tools is pinned in the dev extra, so its output is stable; the
protobuf runtime range in pyproject.toml must accept the version it generates for.
"""

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
# Each .proto, by the folder it and its generated modules live in.
PROTOS = (("server", "querier.proto"), ("server", "push.proto"), ("model", "pprof.proto"))


def generate(output: Path) -> None:
    """Write the generated modules of every .proto in PROTOS under `output`, each in the
    folder of its .proto (output/server/querier_pb2.py, ...)."""
    for folder, proto in PROTOS:
        (output / folder).mkdir(parents=True, exist_ok=True)
        arguments = [
            "protoc",
            f"-I{ROOT / folder}",
            f"--python_out={output / folder}",
            f"--pyi_out={output / folder}",
            str(ROOT / folder / proto),
        ]
        if protoc.main(arguments) != 0:
            raise RuntimeError(f"protoc failed on {folder}/{proto}")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)

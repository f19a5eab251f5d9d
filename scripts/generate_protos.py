"""Generate server/querier_pb2.py and its .pyi stub from server/querier.proto.

The generated files are committed, so installing podflame needs no protoc; run this
after editing the .proto (`.venv/bin/python scripts/generate_protos.py`).
tests/server/test_querier_proto.py fails when the committed files differ from what
this produces. grpcio-tools is pinned in the dev extra, so its output is stable; the
protobuf runtime range in the server extra must accept the version it generates for.
"""

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "server"
PROTOS = ("querier.proto",)


def generate(output: Path) -> None:
    """Write the generated modules of every .proto in PROTOS into `output`."""
    for proto in PROTOS:
        arguments = [
            "protoc",
            f"-I{PROTO_DIR}",
            f"--python_out={output}",
            f"--pyi_out={output}",
            str(PROTO_DIR / proto),
        ]
        if protoc.main(arguments) != 0:
            raise RuntimeError(f"protoc failed on {proto}")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else PROTO_DIR)

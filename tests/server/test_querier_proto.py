"""The committed server/querier_pb2.py and .pyi are what server/querier.proto generates."""

from pathlib import Path

from scripts.generate_protos import PROTO_DIR, generate


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    generate(tmp_path)
    for generated in sorted(tmp_path.iterdir()):
        committed = PROTO_DIR / generated.name
        assert committed.read_bytes() == generated.read_bytes(), (
            f"{committed} is stale: run scripts/generate_protos.py"
        )
    assert {path.name for path in tmp_path.iterdir()} == {"querier_pb2.py", "querier_pb2.pyi"}

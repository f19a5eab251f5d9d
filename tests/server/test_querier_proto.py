"""The committed `_pb2.py` modules and stubs are what their .proto files generate
(server/querier.proto, server/push.proto, model/pprof.proto)."""

from pathlib import Path

from scripts.generate_protos import PROTOS, ROOT, generate


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    generate(tmp_path)
    generated = sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*.py*"))
    for path in generated:
        committed = ROOT / path
        assert committed.read_bytes() == (tmp_path / path).read_bytes(), (
            f"{committed} is stale: run scripts/generate_protos.py"
        )
    stems = [f"{folder}/{proto.removesuffix('.proto')}_pb2" for folder, proto in PROTOS]
    assert {str(path) for path in generated} == {
        stem + suffix for stem in stems for suffix in (".py", ".pyi")
    }

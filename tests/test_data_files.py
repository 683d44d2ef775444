"""The real models and data the tests use are in the repository, unchanged."""

import hashlib
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"


def test_every_data_file_matches_its_checksum_and_is_documented():
    readme = (DATA / "README.md").read_text()
    lines = (DATA / "SHA256SUMS").read_text().split("\n")
    listed = dict(reversed(line.split()) for line in lines if line.strip())
    assert listed, "SHA256SUMS lists no files"
    for name, digest in listed.items():
        assert hashlib.sha256((DATA / name).read_bytes()).hexdigest() == digest, name
        assert f"`{name}`" in readme and digest in readme, name
    on_disk = {p.name for p in DATA.iterdir()} - {"README.md", "SHA256SUMS"}
    assert on_disk == set(listed)

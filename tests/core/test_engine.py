"""Engine URLs: the plain postgresql:// scheme gets psycopg 3 and keeps its password."""

from __future__ import annotations

from modelmon.store.engine import make_engine


def test_plain_postgresql_url_uses_psycopg_and_keeps_the_password() -> None:
    engine = make_engine("postgresql://modelmon:s3cret@db.example:5432/modelmon")
    assert engine.url.drivername == "postgresql+psycopg"
    assert engine.url.password == "s3cret"
    assert engine.url.render_as_string(hide_password=False).endswith("modelmon:s3cret@db.example:5432/modelmon")

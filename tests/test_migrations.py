"""Migrations: one head, an empty database upgrades to every table, no drift from the models."""
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from console import ROOT
from console.extensions import db


def test_one_head():
    config = Config(str(ROOT / "migrations" / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    assert len(ScriptDirectory.from_config(config).get_heads()) == 1


def test_upgrade_creates_every_table(app):
    tables = set(inspect(db.engine).get_table_names())
    assert set(db.metadata.tables) <= tables
    assert "alembic_version" in tables


def _check_drift():
    from flask_migrate import check

    try:
        check()  # Flask-Migrate exits non-zero when autogenerate finds differences
    except SystemExit as exc:
        return exc.code
    return 0


def test_models_and_migrations_do_not_drift(app):
    assert _check_drift() == 0


def test_drift_check_notices_a_difference(app):
    from sqlalchemy import text

    db.session.execute(text("ALTER TABLE branch ADD COLUMN stray INTEGER"))
    db.session.commit()
    assert _check_drift() != 0


def test_old_migrations_do_not_take_their_trigger_ddl_from_the_models():
    """Trigger DDL is frozen inside the migration that created it: editing a model helper must not
    rewrite what an old migration does."""
    from pathlib import Path

    versions = Path(__file__).resolve().parent.parent / "migrations" / "versions"
    for path in sorted(versions.glob("*.py")):
        source = path.read_text(encoding="utf-8")
        assert "append_only_ddl" not in source.replace("_append_only_ddl", ""), path.name

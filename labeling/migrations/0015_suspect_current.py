"""Suspect.current: the image's annotation is still at the suspect's ``version`` and unconfirmed
(what services.suspects.queue asks of an open suspect), kept by the database so that a run's
open suspects are its stored figures less two index-only counts of what changed since it was
scored: the settled ones (``suspect_settled_idx``, by status, class and reasons) and the open
ones no longer current (``suspect_stale_idx``). Before, every page of a run walked the
annotations changed since scoring (one probe each), whatever those changes were: 1,000
retags cost 2 ms, 75,000 (another run's queue worked through, an import) 350 ms a walk, two
or three walks a page.

Kept in the statement that writes, whatever wrote it:
- a suspect inserted, or its version / image / task changed: computed from the annotation
  (PostgreSQL: a BEFORE row trigger; SQLite: an AFTER row trigger that sets it);
- an annotation inserted, deleted or changed: recomputed for the suspects of the (image, task)
  pairs it names, before and after (PostgreSQL: a statement trigger over transition tables).
"""

from django.conf import settings
from django.db import migrations, models

ANNOTATION, SUSPECT = "labeling_annotation", "labeling_suspect"


def now_current(s: str) -> str:
    """Whether the suspect ``s`` (an alias or NEW) is current."""
    return (f"EXISTS (SELECT 1 FROM {ANNOTATION} a WHERE a.image_id = {s}.image_id AND a.task_id = {s}.task_id "
            f"AND a.version = {s}.version AND NOT a.verified)")


def pg_recompute(pairs: str) -> str:
    """Recompute ``current`` of the suspects of the (image_id, task_id) pairs in ``pairs``;
    rows already right are not written."""
    return (f"UPDATE {SUSPECT} s SET current = {now_current('s')} FROM (SELECT DISTINCT image_id, task_id "
            f"FROM ({pairs}) x) p WHERE s.image_id = p.image_id AND s.task_id = p.task_id "
            f"AND s.current IS DISTINCT FROM {now_current('s')};")


CHANGED = ("SELECT {side}.image_id, {side}.task_id FROM old_rows o JOIN new_rows n ON n.id = o.id "
           "WHERE (o.image_id, o.task_id, o.version, o.verified) IS DISTINCT FROM "
           "(n.image_id, n.task_id, n.version, n.verified)")

PG_FUNCTIONS = f"""
CREATE FUNCTION labeling_suspect_current() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.current := {now_current('NEW')};
  RETURN NEW;
END $$;
CREATE TRIGGER labeling_suspect_current_set BEFORE INSERT OR UPDATE OF version, image_id, task_id ON {SUSPECT}
  FOR EACH ROW EXECUTE FUNCTION labeling_suspect_current();

CREATE FUNCTION labeling_suspect_current_annotations() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    {pg_recompute("SELECT image_id, task_id FROM new_rows")}
  ELSIF TG_OP = 'DELETE' THEN
    {pg_recompute("SELECT image_id, task_id FROM old_rows")}
  ELSE
    {pg_recompute(CHANGED.format(side="o") + " UNION ALL " + CHANGED.format(side="n"))}
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER labeling_suspect_current_ins AFTER INSERT ON {ANNOTATION}
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION labeling_suspect_current_annotations();
CREATE TRIGGER labeling_suspect_current_upd AFTER UPDATE ON {ANNOTATION}
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION labeling_suspect_current_annotations();
CREATE TRIGGER labeling_suspect_current_del AFTER DELETE ON {ANNOTATION}
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION labeling_suspect_current_annotations();
"""

PG_DROP = f"""
DROP TRIGGER IF EXISTS labeling_suspect_current_set ON {SUSPECT};
DROP TRIGGER IF EXISTS labeling_suspect_current_ins ON {ANNOTATION};
DROP TRIGGER IF EXISTS labeling_suspect_current_upd ON {ANNOTATION};
DROP TRIGGER IF EXISTS labeling_suspect_current_del ON {ANNOTATION};
DROP FUNCTION IF EXISTS labeling_suspect_current();
DROP FUNCTION IF EXISTS labeling_suspect_current_annotations();
"""


def sqlite_recompute(side: str) -> str:
    return (f"UPDATE {SUSPECT} SET current = {now_current(SUSPECT)} "
            f"WHERE image_id = {side}.image_id AND task_id = {side}.task_id;")


SQLITE_TRIGGERS = {
    "labeling_suspect_current_sins": f"""CREATE TRIGGER labeling_suspect_current_sins AFTER INSERT ON {SUSPECT} BEGIN
      UPDATE {SUSPECT} SET current = {now_current(SUSPECT)} WHERE id = NEW.id;
    END""",
    "labeling_suspect_current_supd": f"""CREATE TRIGGER labeling_suspect_current_supd
    AFTER UPDATE OF version, image_id, task_id ON {SUSPECT} BEGIN
      UPDATE {SUSPECT} SET current = {now_current(SUSPECT)} WHERE id = NEW.id;
    END""",
    "labeling_suspect_current_ins": f"""CREATE TRIGGER labeling_suspect_current_ins AFTER INSERT ON {ANNOTATION} BEGIN
      {sqlite_recompute("NEW")}
    END""",
    "labeling_suspect_current_del": f"""CREATE TRIGGER labeling_suspect_current_del AFTER DELETE ON {ANNOTATION} BEGIN
      {sqlite_recompute("OLD")}
    END""",
    "labeling_suspect_current_upd": f"""CREATE TRIGGER labeling_suspect_current_upd
    AFTER UPDATE OF image_id, task_id, version, verified ON {ANNOTATION} BEGIN
      {sqlite_recompute("OLD")}
      {sqlite_recompute("NEW")}
    END""",
}

FILL = f"UPDATE {SUSPECT} SET current = {now_current(SUSPECT)}"


def install(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    with schema_editor.connection.cursor() as cursor:
        if vendor == "postgresql":
            cursor.execute(f"LOCK TABLE {ANNOTATION}, {SUSPECT} IN SHARE MODE")
            cursor.execute(FILL)
            cursor.execute(PG_FUNCTIONS)
        elif vendor == "sqlite":
            cursor.execute(FILL)
            for sql in SQLITE_TRIGGERS.values():
                cursor.execute(sql)
        else:
            raise RuntimeError(f"Retag keeps Suspect.current with triggers for PostgreSQL and SQLite, not {vendor}")


def uninstall(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    with schema_editor.connection.cursor() as cursor:
        if vendor == "postgresql":
            cursor.execute(PG_DROP)
        elif vendor == "sqlite":
            for name in SQLITE_TRIGGERS:
                cursor.execute(f"DROP TRIGGER IF EXISTS {name}")


class Migration(migrations.Migration):

    dependencies = [
        ('labeling', '0014_unlabelled'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='suspect',
            name='current',
            field=models.BooleanField(default=False, editable=False),
        ),
        migrations.RunPython(install, uninstall),
        migrations.AddIndex(
            model_name='suspect',
            index=models.Index(condition=models.Q(('current', False), ('status', 'open')), fields=['suspect_run', 'given_label', 'image'], name='suspect_stale_idx'),
        ),
        migrations.AddIndex(
            model_name='suspect',
            index=models.Index(condition=models.Q(('status__in', ['retagged', 'kept'])), fields=['suspect_run', 'status', 'given_label', 'reasons'], name='suspect_settled_idx'),
        ),
    ]

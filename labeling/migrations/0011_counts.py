"""Counts a page shows, kept by the database: ImageCount (project, split, status) and
LabelCount (task, label, split, status), moved by triggers in the statement that inserts,
deletes or changes an image or an annotation, whatever wrote it (the ORM, bulk_create,
update(), COPY). PostgreSQL gets statement-level triggers over transition tables (one
aggregate per statement, count rows locked in key order); SQLite row-level ones. An increase
is an upsert; a decrease only updates an existing row (a count row is never created for a
project, task or label being deleted).

Also: the counts of what is already there, an index for the events' source filter and, on
PostgreSQL, a trigram index for the key search (``icontains`` is ``UPPER(key::text) LIKE``).
"""

import django.db.models.deletion
from django.db import migrations, models

IMAGE, ANNOTATION = "labeling_image", "labeling_annotation"
IMAGE_COUNT, LABEL_COUNT = "labeling_imagecount", "labeling_labelcount"
IMAGE_KEYS, LABEL_KEYS = ("project_id", "split", "status"), ("task_id", "label_id", "split", "status")


def pg_apply(table: str, keys: tuple[str, ...], deltas: str, up: bool = True, down: bool = True) -> str:
    """The statements that add ``deltas`` (a query of ``keys`` and ``d``, +1 or -1 a row) to
    the count table: an upsert of the net increases (``up``), in key order, then an update of
    the net decreases (``down``). With decreases, the existing rows are first locked in key
    order (an UPDATE's join has no order): two retags the opposite ways (X to Y, Y to X) then
    queue up on the same first row instead of deadlocking."""
    cols = ", ".join(keys)
    net = f"WITH net AS (SELECT {cols}, sum(d) AS d FROM ({deltas}) AS x GROUP BY {cols})"
    match = " AND ".join(f"c.{k} = net.{k}" for k in keys)
    ordered = ", ".join(f"c.{k}" for k in keys)
    lock = (f"PERFORM 1 FROM {table} c WHERE ({ordered}) IN (SELECT {cols} FROM ({deltas}) AS x "
            f"GROUP BY {cols} HAVING sum(d) <> 0) ORDER BY {ordered} FOR UPDATE;\n")
    return ((lock if down else "") + (f"{net} INSERT INTO {table} ({cols}, n) SELECT {cols}, d FROM net WHERE d > 0 ORDER BY {cols} "
             f"ON CONFLICT ({cols}) DO UPDATE SET n = {table}.n + EXCLUDED.n;\n" if up else "")
            + (f"{net}, dec AS (SELECT * FROM net WHERE d < 0 ORDER BY {cols}) "
               f"UPDATE {table} c SET n = c.n + net.d FROM dec AS net WHERE {match};\n" if down else ""))


def pg_image_labels(rows: str, sign: int) -> str:
    """The labelled annotations of the images in ``rows`` (id, split, status), each ``sign``."""
    return (f"SELECT a.task_id, a.label_id, r.split, r.status, {sign} AS d FROM {rows} r "
            f"JOIN {ANNOTATION} a ON a.image_id = r.id WHERE a.label_id IS NOT NULL")


PG_MOVED = ("(SELECT n.id, o.project_id AS o_project_id, o.split AS o_split, o.status AS o_status, "
            "n.project_id, n.split, n.status FROM old_rows o JOIN new_rows n ON n.id = o.id "
            "WHERE (o.project_id, o.split, o.status) IS DISTINCT FROM (n.project_id, n.split, n.status))")
PG_MOVED_OLD = PG_MOVED.replace("SELECT n.id, o.project_id AS o_project_id, o.split AS o_split, o.status AS o_status, "
                                "n.project_id, n.split, n.status",
                                "SELECT n.id, o.project_id, o.split, o.status")


def pg_annotation_deltas(rows: str, sign: int) -> str:
    return (f"SELECT r.task_id, r.label_id, i.split, i.status, {sign} AS d FROM {rows} r "
            f"JOIN {IMAGE} i ON i.id = r.image_id WHERE r.label_id IS NOT NULL")


PG_IMAGE_FUNCTION = f"""
CREATE FUNCTION labeling_count_images() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    {pg_apply(IMAGE_COUNT, IMAGE_KEYS, "SELECT project_id, split, status, 1 AS d FROM new_rows", down=False)}
  ELSIF TG_OP = 'DELETE' THEN
    {pg_apply(IMAGE_COUNT, IMAGE_KEYS, "SELECT project_id, split, status, -1 AS d FROM old_rows", up=False)}
    {pg_apply(LABEL_COUNT, LABEL_KEYS, pg_image_labels("old_rows", -1), up=False)}
  ELSE
    {pg_apply(IMAGE_COUNT, IMAGE_KEYS,
              f"SELECT project_id, split, status, 1 AS d FROM {PG_MOVED} m UNION ALL "
              f"SELECT project_id, split, status, -1 FROM {PG_MOVED_OLD} m")}
    {pg_apply(LABEL_COUNT, LABEL_KEYS,
              pg_image_labels(PG_MOVED, 1) + " UNION ALL " + pg_image_labels(PG_MOVED_OLD, -1))}
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER labeling_count_images_ins AFTER INSERT ON {IMAGE}
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION labeling_count_images();
CREATE TRIGGER labeling_count_images_upd AFTER UPDATE ON {IMAGE}
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION labeling_count_images();
CREATE TRIGGER labeling_count_images_del AFTER DELETE ON {IMAGE}
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION labeling_count_images();

CREATE FUNCTION labeling_count_annotations() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    {pg_apply(LABEL_COUNT, LABEL_KEYS, pg_annotation_deltas("new_rows", 1), down=False)}
  ELSIF TG_OP = 'DELETE' THEN
    {pg_apply(LABEL_COUNT, LABEL_KEYS, pg_annotation_deltas("old_rows", -1), up=False)}
  ELSE
    {pg_apply(LABEL_COUNT, LABEL_KEYS,
              pg_annotation_deltas("(SELECT n.* FROM new_rows n JOIN old_rows o ON o.id = n.id "
                                   "WHERE (o.image_id, o.task_id, o.label_id) IS DISTINCT FROM "
                                   "(n.image_id, n.task_id, n.label_id))", 1) + " UNION ALL " +
              pg_annotation_deltas("(SELECT o.* FROM new_rows n JOIN old_rows o ON o.id = n.id "
                                   "WHERE (o.image_id, o.task_id, o.label_id) IS DISTINCT FROM "
                                   "(n.image_id, n.task_id, n.label_id))", -1))}
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER labeling_count_annotations_ins AFTER INSERT ON {ANNOTATION}
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION labeling_count_annotations();
CREATE TRIGGER labeling_count_annotations_upd AFTER UPDATE ON {ANNOTATION}
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION labeling_count_annotations();
CREATE TRIGGER labeling_count_annotations_del AFTER DELETE ON {ANNOTATION}
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION labeling_count_annotations();
"""

PG_DROP = """
DROP TRIGGER IF EXISTS labeling_count_images_ins ON labeling_image;
DROP TRIGGER IF EXISTS labeling_count_images_upd ON labeling_image;
DROP TRIGGER IF EXISTS labeling_count_images_del ON labeling_image;
DROP TRIGGER IF EXISTS labeling_count_annotations_ins ON labeling_annotation;
DROP TRIGGER IF EXISTS labeling_count_annotations_upd ON labeling_annotation;
DROP TRIGGER IF EXISTS labeling_count_annotations_del ON labeling_annotation;
DROP FUNCTION IF EXISTS labeling_count_images();
DROP FUNCTION IF EXISTS labeling_count_annotations();
"""


def sqlite_add(table: str, keys: tuple[str, ...], select: str) -> str:
    """Add 1 to the count of every row ``select`` gives (its ``keys``, in order)."""
    cols = ", ".join(keys)
    # "WHERE true": SQLite needs a WHERE before ON CONFLICT in an INSERT ... SELECT.
    where = "" if " WHERE " in select else " WHERE true"
    return (f"INSERT INTO {table} ({cols}, n) {select}{where} "
            f"ON CONFLICT ({cols}) DO UPDATE SET n = n + 1;")


def sqlite_sub(table: str, keys: tuple[str, ...], values: tuple[str, ...]) -> str:
    return f"UPDATE {table} SET n = n - 1 WHERE " + " AND ".join(f"{k} = {v}" for k, v in zip(keys, values)) + ";"


def sqlite_image_labels(side: str) -> str:
    return (f"SELECT a.task_id, a.label_id, {side}.split, {side}.status, 1 FROM {ANNOTATION} a "
            f"WHERE a.image_id = {side}.id AND a.label_id IS NOT NULL")


def sqlite_sub_image_labels(side: str) -> str:
    return (f"UPDATE {LABEL_COUNT} SET n = n - 1 WHERE split = {side}.split AND status = {side}.status AND "
            f"EXISTS (SELECT 1 FROM {ANNOTATION} a WHERE a.image_id = {side}.id "
            f"AND a.task_id = {LABEL_COUNT}.task_id AND a.label_id = {LABEL_COUNT}.label_id);")


def sqlite_annotation_add(side: str) -> str:
    return sqlite_add(LABEL_COUNT, LABEL_KEYS,
                      f"SELECT {side}.task_id, {side}.label_id, i.split, i.status, 1 FROM {IMAGE} i "
                      f"WHERE i.id = {side}.image_id AND {side}.label_id IS NOT NULL")


def sqlite_annotation_sub(side: str) -> str:
    return (f"UPDATE {LABEL_COUNT} SET n = n - 1 WHERE task_id = {side}.task_id AND label_id = {side}.label_id "
            f"AND split = (SELECT split FROM {IMAGE} WHERE id = {side}.image_id) "
            f"AND status = (SELECT status FROM {IMAGE} WHERE id = {side}.image_id);")


SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER labeling_count_images_ins AFTER INSERT ON {IMAGE} BEGIN
      {sqlite_add(IMAGE_COUNT, IMAGE_KEYS, "SELECT NEW.project_id, NEW.split, NEW.status, 1")}
    END""",
    f"""CREATE TRIGGER labeling_count_images_del AFTER DELETE ON {IMAGE} BEGIN
      {sqlite_sub(IMAGE_COUNT, IMAGE_KEYS, ("OLD.project_id", "OLD.split", "OLD.status"))}
      {sqlite_sub_image_labels("OLD")}
    END""",
    f"""CREATE TRIGGER labeling_count_images_upd AFTER UPDATE OF project_id, split, status ON {IMAGE}
    WHEN OLD.project_id <> NEW.project_id OR OLD.split <> NEW.split OR OLD.status <> NEW.status BEGIN
      {sqlite_sub(IMAGE_COUNT, IMAGE_KEYS, ("OLD.project_id", "OLD.split", "OLD.status"))}
      {sqlite_add(IMAGE_COUNT, IMAGE_KEYS, "SELECT NEW.project_id, NEW.split, NEW.status, 1")}
      {sqlite_sub_image_labels("OLD")}
      {sqlite_add(LABEL_COUNT, LABEL_KEYS, sqlite_image_labels("NEW"))}
    END""",
    f"""CREATE TRIGGER labeling_count_annotations_ins AFTER INSERT ON {ANNOTATION} BEGIN
      {sqlite_annotation_add("NEW")}
    END""",
    f"""CREATE TRIGGER labeling_count_annotations_del AFTER DELETE ON {ANNOTATION} BEGIN
      {sqlite_annotation_sub("OLD")}
    END""",
    f"""CREATE TRIGGER labeling_count_annotations_upd AFTER UPDATE OF image_id, task_id, label_id ON {ANNOTATION}
    WHEN OLD.label_id IS NOT NEW.label_id OR OLD.task_id <> NEW.task_id OR OLD.image_id <> NEW.image_id BEGIN
      {sqlite_annotation_sub("OLD")}
      {sqlite_annotation_add("NEW")}
    END""",
]
SQLITE_TRIGGER_NAMES = ["labeling_count_images_ins", "labeling_count_images_del", "labeling_count_images_upd",
                        "labeling_count_annotations_ins", "labeling_count_annotations_del",
                        "labeling_count_annotations_upd"]

FILL = [
    f"INSERT INTO {IMAGE_COUNT} (project_id, split, status, n) "
    f"SELECT project_id, split, status, count(*) FROM {IMAGE} GROUP BY project_id, split, status",
    f"INSERT INTO {LABEL_COUNT} (task_id, label_id, split, status, n) "
    f"SELECT a.task_id, a.label_id, i.split, i.status, count(*) FROM {ANNOTATION} a "
    f"JOIN {IMAGE} i ON i.id = a.image_id WHERE a.label_id IS NOT NULL "
    f"GROUP BY a.task_id, a.label_id, i.split, i.status",
]

KEY_TRGM = ("CREATE EXTENSION IF NOT EXISTS pg_trgm",
            "CREATE INDEX image_key_trgm_idx ON labeling_image USING gin ((UPPER(key::text)) gin_trgm_ops)")


def install(apps, schema_editor):
    """Fill the counts from what is there, then keep them (the tables are locked meanwhile)."""
    vendor = schema_editor.connection.vendor
    with schema_editor.connection.cursor() as cursor:
        if vendor == "postgresql":
            cursor.execute(f"LOCK TABLE {IMAGE}, {ANNOTATION} IN SHARE MODE")
            for sql in FILL:
                cursor.execute(sql)
            cursor.execute(PG_IMAGE_FUNCTION)
            for sql in KEY_TRGM:
                cursor.execute(sql)
        elif vendor == "sqlite":
            for sql in FILL + SQLITE_TRIGGERS:
                cursor.execute(sql)
        else:
            raise RuntimeError(f"Retag keeps its counts with triggers for PostgreSQL and SQLite, not {vendor}")


def uninstall(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    with schema_editor.connection.cursor() as cursor:
        if vendor == "postgresql":
            cursor.execute(PG_DROP)
            cursor.execute("DROP INDEX IF EXISTS image_key_trgm_idx")
        elif vendor == "sqlite":
            for name in SQLITE_TRIGGER_NAMES:
                cursor.execute(f"DROP TRIGGER IF EXISTS {name}")


class Migration(migrations.Migration):

    dependencies = [
        ('labeling', '0010_lineage_duplicates'),
    ]

    operations = [
        migrations.CreateModel(
            name='ImageCount',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('split', models.CharField(choices=[('train', 'train'), ('test', 'test')], max_length=5)),
                ('status', models.CharField(choices=[('ok', 'ok'), ('corrupt', 'corrupt'), ('missing', 'missing from source')], max_length=10)),
                ('n', models.BigIntegerField(default=0)),
            ],
        ),
        migrations.CreateModel(
            name='LabelCount',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('split', models.CharField(choices=[('train', 'train'), ('test', 'test')], max_length=5)),
                ('status', models.CharField(choices=[('ok', 'ok'), ('corrupt', 'corrupt'), ('missing', 'missing from source')], max_length=10)),
                ('n', models.BigIntegerField(default=0)),
            ],
        ),
        migrations.AddIndex(
            model_name='labelevent',
            index=models.Index(fields=['source', 'id'], name='event_source_idx'),
        ),
        migrations.AddField(
            model_name='imagecount',
            name='project',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='labeling.project'),
        ),
        migrations.AddField(
            model_name='labelcount',
            name='label',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='labeling.label'),
        ),
        migrations.AddField(
            model_name='labelcount',
            name='task',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='labeling.task'),
        ),
        migrations.AddConstraint(
            model_name='imagecount',
            constraint=models.UniqueConstraint(fields=('project', 'split', 'status'), name='imagecount_unique'),
        ),
        migrations.AddConstraint(
            model_name='labelcount',
            constraint=models.UniqueConstraint(fields=('task', 'label', 'split', 'status'), name='labelcount_unique'),
        ),
        migrations.RunPython(install, uninstall),
    ]

"""The images without a label, per task, kept by the database: Unlabelled (task, image), one
row for each task of an image's project where the image has no annotation with a label. The
grid's "no label" filter reads them through the (task, image) index, so its page costs what
the first page of any filter costs whatever the share of unlabelled images (the NOT EXISTS
anti-join it replaces walked nearly every image to find the few without an annotation).

Kept like the counts of migration 0011, in the statement that writes, whatever wrote it (the
ORM, bulk_create, update(), COPY): PostgreSQL by statement-level triggers over transition
tables, SQLite by row-level ones.
- an image or a task added: a row for each task of the project (for each image of it)
  without a labelled annotation; deleted: its rows go; moved to another project: its rows
  are made again for the new project;
- an annotation inserted, deleted or changed: the (task, image) pairs it names, before and
  after, are made right (a row where there is no labelled annotation, none where there is).
"""

import django.db.models.deletion
from django.db import migrations, models

IMAGE, TASK, ANNOTATION, UNLABELLED = "labeling_image", "labeling_task", "labeling_annotation", "labeling_unlabelled"


def labelled(pair: str) -> str:
    """An annotation with a label for the pair ``pair`` (an alias with task_id, image_id)."""
    return (f"EXISTS (SELECT 1 FROM {ANNOTATION} x WHERE x.image_id = {pair}.image_id "
            f"AND x.task_id = {pair}.task_id AND x.label_id IS NOT NULL)")


def pg_add_images(rows: str) -> str:
    """Rows for the images in ``rows`` (id, project_id), one per task of their project."""
    return (f"INSERT INTO {UNLABELLED} (task_id, image_id) SELECT p.task_id, p.image_id FROM "
            f"(SELECT t.id AS task_id, r.id AS image_id FROM {rows} r JOIN {TASK} t ON t.project_id = r.project_id) p "
            f"WHERE NOT {labelled('p')} ORDER BY 1, 2 ON CONFLICT (task_id, image_id) DO NOTHING;")


def pg_add_tasks(rows: str) -> str:
    """Rows for the tasks in ``rows`` (id, project_id), one per image of their project."""
    return (f"INSERT INTO {UNLABELLED} (task_id, image_id) SELECT p.task_id, p.image_id FROM "
            f"(SELECT r.id AS task_id, i.id AS image_id FROM {rows} r JOIN {IMAGE} i ON i.project_id = r.project_id) p "
            f"WHERE NOT {labelled('p')} ORDER BY 1, 2 ON CONFLICT (task_id, image_id) DO NOTHING;")


def pg_pairs(pairs: str) -> str:
    """Make the pairs in ``pairs`` (task_id, image_id) right: no row where there is a
    labelled annotation, a row where there is none (and the image and task exist, in one
    project)."""
    return (f"DELETE FROM {UNLABELLED} u USING ({pairs}) p WHERE u.task_id = p.task_id "
            f"AND u.image_id = p.image_id AND {labelled('p')};\n"
            f"    INSERT INTO {UNLABELLED} (task_id, image_id) SELECT DISTINCT p.task_id, p.image_id FROM ({pairs}) p "
            f"JOIN {IMAGE} i ON i.id = p.image_id JOIN {TASK} t ON t.id = p.task_id AND t.project_id = i.project_id "
            f"WHERE NOT {labelled('p')} ORDER BY 1, 2 ON CONFLICT (task_id, image_id) DO NOTHING;")


MOVED = ("(SELECT n.id, n.project_id FROM old_rows o JOIN new_rows n ON n.id = o.id "
         "WHERE o.project_id <> n.project_id)")
CHANGED = ("SELECT {side}.task_id, {side}.image_id FROM old_rows o JOIN new_rows n ON n.id = o.id "
           "WHERE (o.image_id, o.task_id, o.label_id) IS DISTINCT FROM (n.image_id, n.task_id, n.label_id)")

PG_FUNCTIONS = f"""
CREATE FUNCTION labeling_unlabelled_images() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    {pg_add_images("new_rows")}
  ELSIF TG_OP = 'DELETE' THEN
    DELETE FROM {UNLABELLED} u USING old_rows o WHERE u.image_id = o.id;
  ELSE
    DELETE FROM {UNLABELLED} u USING {MOVED} m WHERE u.image_id = m.id;
    {pg_add_images(MOVED)}
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER labeling_unlabelled_images_ins AFTER INSERT ON {IMAGE}
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION labeling_unlabelled_images();
CREATE TRIGGER labeling_unlabelled_images_upd AFTER UPDATE ON {IMAGE}
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION labeling_unlabelled_images();
CREATE TRIGGER labeling_unlabelled_images_del AFTER DELETE ON {IMAGE}
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION labeling_unlabelled_images();

CREATE FUNCTION labeling_unlabelled_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    {pg_add_tasks("new_rows")}
  ELSIF TG_OP = 'DELETE' THEN
    DELETE FROM {UNLABELLED} u USING old_rows o WHERE u.task_id = o.id;
  ELSE
    DELETE FROM {UNLABELLED} u USING {MOVED} m WHERE u.task_id = m.id;
    {pg_add_tasks(MOVED)}
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER labeling_unlabelled_tasks_ins AFTER INSERT ON {TASK}
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION labeling_unlabelled_tasks();
CREATE TRIGGER labeling_unlabelled_tasks_upd AFTER UPDATE ON {TASK}
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION labeling_unlabelled_tasks();
CREATE TRIGGER labeling_unlabelled_tasks_del AFTER DELETE ON {TASK}
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION labeling_unlabelled_tasks();

CREATE FUNCTION labeling_unlabelled_annotations() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    {pg_pairs("SELECT task_id, image_id FROM new_rows")}
  ELSIF TG_OP = 'DELETE' THEN
    {pg_pairs("SELECT task_id, image_id FROM old_rows")}
  ELSE
    {pg_pairs(CHANGED.format(side="o") + " UNION " + CHANGED.format(side="n"))}
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER labeling_unlabelled_annotations_ins AFTER INSERT ON {ANNOTATION}
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION labeling_unlabelled_annotations();
CREATE TRIGGER labeling_unlabelled_annotations_upd AFTER UPDATE ON {ANNOTATION}
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION labeling_unlabelled_annotations();
CREATE TRIGGER labeling_unlabelled_annotations_del AFTER DELETE ON {ANNOTATION}
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION labeling_unlabelled_annotations();
"""

PG_TRIGGERS = [(f"labeling_unlabelled_{what}_{op}", table) for what, table in
               (("images", IMAGE), ("tasks", TASK), ("annotations", ANNOTATION)) for op in ("ins", "upd", "del")]
PG_DROP = "".join(f"DROP TRIGGER IF EXISTS {name} ON {table};\n" for name, table in PG_TRIGGERS) + (
    "DROP FUNCTION IF EXISTS labeling_unlabelled_images();\n"
    "DROP FUNCTION IF EXISTS labeling_unlabelled_tasks();\n"
    "DROP FUNCTION IF EXISTS labeling_unlabelled_annotations();\n")


def sqlite_pair(side: str) -> str:
    """Make the pair (``side``.task_id, ``side``.image_id) right (see pg_pairs)."""
    return (f"DELETE FROM {UNLABELLED} WHERE task_id = {side}.task_id AND image_id = {side}.image_id "
            f"AND {labelled(side)};\n"
            f"      INSERT OR IGNORE INTO {UNLABELLED} (task_id, image_id) SELECT t.id, i.id FROM {IMAGE} i "
            f"JOIN {TASK} t ON t.project_id = i.project_id WHERE i.id = {side}.image_id AND t.id = {side}.task_id "
            f"AND NOT {labelled(side)};")


SQLITE_ADD_IMAGE = (f"INSERT OR IGNORE INTO {UNLABELLED} (task_id, image_id) SELECT t.id, NEW.id FROM {TASK} t "
                    f"WHERE t.project_id = NEW.project_id AND NOT EXISTS (SELECT 1 FROM {ANNOTATION} x "
                    f"WHERE x.image_id = NEW.id AND x.task_id = t.id AND x.label_id IS NOT NULL);")
SQLITE_ADD_TASK = (f"INSERT OR IGNORE INTO {UNLABELLED} (task_id, image_id) SELECT NEW.id, i.id FROM {IMAGE} i "
                   f"WHERE i.project_id = NEW.project_id AND NOT EXISTS (SELECT 1 FROM {ANNOTATION} x "
                   f"WHERE x.image_id = i.id AND x.task_id = NEW.id AND x.label_id IS NOT NULL);")
SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER labeling_unlabelled_images_ins AFTER INSERT ON {IMAGE} BEGIN
      {SQLITE_ADD_IMAGE}
    END""",
    f"""CREATE TRIGGER labeling_unlabelled_images_del AFTER DELETE ON {IMAGE} BEGIN
      DELETE FROM {UNLABELLED} WHERE image_id = OLD.id;
    END""",
    f"""CREATE TRIGGER labeling_unlabelled_images_upd AFTER UPDATE OF project_id ON {IMAGE}
    WHEN OLD.project_id <> NEW.project_id BEGIN
      DELETE FROM {UNLABELLED} WHERE image_id = OLD.id;
      {SQLITE_ADD_IMAGE}
    END""",
    f"""CREATE TRIGGER labeling_unlabelled_tasks_ins AFTER INSERT ON {TASK} BEGIN
      {SQLITE_ADD_TASK}
    END""",
    f"""CREATE TRIGGER labeling_unlabelled_tasks_del AFTER DELETE ON {TASK} BEGIN
      DELETE FROM {UNLABELLED} WHERE task_id = OLD.id;
    END""",
    f"""CREATE TRIGGER labeling_unlabelled_tasks_upd AFTER UPDATE OF project_id ON {TASK}
    WHEN OLD.project_id <> NEW.project_id BEGIN
      DELETE FROM {UNLABELLED} WHERE task_id = OLD.id;
      {SQLITE_ADD_TASK}
    END""",
    f"""CREATE TRIGGER labeling_unlabelled_annotations_ins AFTER INSERT ON {ANNOTATION} BEGIN
      {sqlite_pair("NEW")}
    END""",
    f"""CREATE TRIGGER labeling_unlabelled_annotations_del AFTER DELETE ON {ANNOTATION} BEGIN
      {sqlite_pair("OLD")}
    END""",
    f"""CREATE TRIGGER labeling_unlabelled_annotations_upd AFTER UPDATE OF image_id, task_id, label_id ON {ANNOTATION}
    WHEN OLD.label_id IS NOT NEW.label_id OR OLD.task_id <> NEW.task_id OR OLD.image_id <> NEW.image_id BEGIN
      {sqlite_pair("OLD")}
      {sqlite_pair("NEW")}
    END""",
]

FILL = (f"INSERT INTO {UNLABELLED} (task_id, image_id) SELECT t.id, i.id FROM {TASK} t "
        f"JOIN {IMAGE} i ON i.project_id = t.project_id WHERE NOT EXISTS (SELECT 1 FROM {ANNOTATION} x "
        f"WHERE x.image_id = i.id AND x.task_id = t.id AND x.label_id IS NOT NULL) ORDER BY t.id, i.id")


def install(apps, schema_editor):
    """Fill the rows from what is there, then keep them (the tables are locked meanwhile)."""
    vendor = schema_editor.connection.vendor
    with schema_editor.connection.cursor() as cursor:
        if vendor == "postgresql":
            cursor.execute(f"LOCK TABLE {IMAGE}, {TASK}, {ANNOTATION} IN SHARE MODE")
            cursor.execute(FILL)
            cursor.execute(PG_FUNCTIONS)
        elif vendor == "sqlite":
            for sql in [FILL] + SQLITE_TRIGGERS:
                cursor.execute(sql)
        else:
            raise RuntimeError(f"Retag keeps its unlabelled images with triggers for PostgreSQL and SQLite, not {vendor}")


def uninstall(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    with schema_editor.connection.cursor() as cursor:
        if vendor == "postgresql":
            cursor.execute(PG_DROP)
        elif vendor == "sqlite":
            for name, _ in PG_TRIGGERS:
                cursor.execute(f"DROP TRIGGER IF EXISTS {name}")


class Migration(migrations.Migration):

    dependencies = [
        ('labeling', '0013_grid_sort_indexes'),
    ]

    operations = [
        migrations.CreateModel(
            name='Unlabelled',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('image', models.ForeignKey(on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='labeling.image')),
                ('task', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='labeling.task')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('task', 'image'), name='unlabelled_unique')],
            },
        ),
        migrations.RunPython(install, uninstall),
    ]

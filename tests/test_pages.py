"""The server-rendered pages: who may open what, and that they show the right numbers,
the labels in their custom order, the history, and escape what users typed."""
import io
import json
import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from PIL import Image as PILImage

from labeling.models import Annotation, Image, ImportJob, LabelEvent, StorageRoot
from labeling.services import browse
from labeling.services.imports import MANIFEST_COLUMNS, OUTCOMES
from labeling.services.labels import ensure_labels, get_or_create_task, reorder_labels
from labeling.services.retag import retag_image
from tests.conftest import PASSWORD
from tests.factories import make_image, make_project

pytestmark = pytest.mark.django_db

XSS = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


def jpeg_bytes(color=(200, 40, 40), size=(40, 30)) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", size, color).save(out, "JPEG", quality=90)
    return out.getvalue()


@pytest.fixture
def shop(tmp_path, settings):
    """Dresses: neckline (v-neck, round, square) and sleeve (short, long); 4 ok images on
    disk, 1 corrupt, 1 missing; a few label events from an import and an annotator."""
    project, neck, (v, round_, square) = make_project()
    sleeve = get_or_create_task(project, "sleeve")
    labels = ensure_labels(sleeve, ["short", "long"])
    folder = tmp_path / "photos"
    folder.mkdir()
    settings.IMPORT_ROOTS = [str(folder)]  # originals are served only from inside a storage root
    images = []
    for i, (split, label) in enumerate([("train", v), ("train", round_), ("test", v), ("train", None)]):
        path = folder / f"{i:02d}.jpg"
        path.write_bytes(jpeg_bytes((40 * i, 90, 150)))
        im = make_image(project, f"dresses/{i:02d}.jpg", split=split, task=neck if label else None, label=label)
        Image.objects.filter(id=im.id).update(uri=path.as_uri(), width=40, height=30, checksum=f"c{i:063d}")
        im.refresh_from_db()
        images.append(im)
    corrupt = make_image(project, "dresses/broken.jpg", status="corrupt",
                         status_reason="truncated image data (image file is truncated)")
    missing = make_image(project, "dresses/gone.jpg", status="missing", status_reason="no longer in the source")
    retag_image(image=images[0], task=sleeve, label=labels["long"], expected_version=0, source="import")
    return {"project": project, "neck": neck, "sleeve": sleeve, "v": v, "round": round_, "square": square,
            "short": labels["short"], "long": labels["long"], "images": images, "corrupt": corrupt,
            "missing": missing}


def client_for(user) -> Client:
    c = Client()
    if user is not None:
        c.force_login(user)
    return c


# --- who may open what ------------------------------------------------------------------

def test_anonymous_sees_only_the_login_page(shop):
    c = Client()
    for url in ["/", f"/p/{shop['project'].slug}/", f"/images/{shop['images'][0].id}/",
                f"/images/{shop['images'][0].id}/original", "/imports/", "/manage/users/"]:
        r = c.get(url)
        assert r.status_code == 302 and r["Location"].startswith("/accounts/login/"), url
    r = c.get("/accounts/login/")
    assert r.status_code == 200
    assert b'name="username"' in r.content and b'name="password"' in r.content


def test_login_page_signs_in_and_goes_home(annotator):
    c = Client()
    r = c.post("/accounts/login/", {"username": annotator.username, "password": PASSWORD})
    assert r.status_code == 302 and r["Location"] == "/"
    r = c.get("/")
    assert r.status_code == 200
    assert b'data-testid="role-badge">annotator<' in r.content
    bad = Client().post("/accounts/login/", {"username": annotator.username, "password": "wrong"})
    assert b"didn't match" in bad.content


def test_user_without_role_gets_403(make_user, shop):
    c = client_for(make_user(None))
    assert c.get("/").status_code == 403
    assert c.get(f"/p/{shop['project'].slug}/").status_code == 403
    r = post_retag(c, shop["images"][0], task=shop["neck"].id, label=shop["round"].id, expected_version=1)
    assert r.status_code == 403
    assert b"no role yet" in c.get("/").content


ADMIN_PAGES = ["/imports/", "/manage/users/", "/manage/storage-roots/"]


@pytest.mark.parametrize("role", ["annotator", "scientist"])
def test_annotators_and_scientists_browse_and_retag_but_not_admin_pages(role, make_user, shop):
    c = client_for(make_user(role))
    image = shop["images"][1]
    for url in ["/", f"/p/{shop['project'].slug}/", f"/p/{shop['project'].slug}/problems/",
                f"/images/{image.id}/", f"/images/{image.id}/original"]:
        assert c.get(url).status_code == 200, url
    job = ImportJob.objects.create(project=shop["project"], kind="folder", source_uri="file:///x")
    for url in ADMIN_PAGES + [f"/p/{shop['project'].slug}/labels/", f"/imports/{job.id}/",
                              f"/api/imports/{job.id}/"]:
        assert c.get(url).status_code == 403, url
    assert c.post("/manage/users/", {"action": "create", "username": "x", "password": "long-enough-pw",
                                     "role": "admin"}).status_code == 403
    r = c.post(f"/p/{shop['project'].slug}/labels/", {"task": shop["neck"].id, "move": f"{shop['v'].id}:down"})
    assert r.status_code == 403
    assert [lb.name for lb in shop["neck"].labels.order_by("position")] == ["v-neck", "round", "square"]
    r = post_retag(c, image, task=shop["neck"].id, label=shop["square"].id, expected_version=1)
    assert r.status_code == 200
    # The nav shows the role; admin links are not offered.
    home = c.get("/").content.decode()
    assert f'data-testid="role-badge">{role}<' in home
    assert 'href="/manage/users/"' not in home


def test_admin_opens_every_page(admin_user, shop):
    c = client_for(admin_user)
    job = ImportJob.objects.create(project=shop["project"], kind="folder", source_uri="file:///x")
    for url in ["/", f"/p/{shop['project'].slug}/", f"/p/{shop['project'].slug}/problems/",
                f"/p/{shop['project'].slug}/labels/", f"/images/{shop['images'][0].id}/",
                f"/imports/{job.id}/", f"/api/imports/{job.id}/", *ADMIN_PAGES]:
        assert c.get(url).status_code == 200, url
    assert 'href="/manage/users/"' in c.get("/").content.decode()


# --- home and grid --------------------------------------------------------------------

def cell_counts(html: str, slug: str) -> dict:
    row = re.search(rf'<tr data-project="{slug}">(.*?)</tr>', html, re.S).group(1)
    return {k: re.sub(r"<[^>]+>", "", v).strip() for k, v in re.findall(r'data-count="(\w+)">(.*?)</td>', row, re.S)}


def test_home_shows_counts_per_project(annotator, shop):
    other, _, _ = make_project(name="Shoes", task="type", labels=("boot", "sneaker"))
    make_image(other, "s/1.jpg")
    html = client_for(annotator).get("/").content.decode()
    assert cell_counts(html, "dresses") == {"images": "6", "ok": "4", "corrupt": "1", "missing": "1", "tasks": "2"}
    assert cell_counts(html, "shoes") == {"images": "1", "ok": "1", "corrupt": "0", "missing": "0", "tasks": "1"}


def test_home_empty_state(annotator, admin_user):
    assert "An admin has to import images first" in client_for(annotator).get("/").content.decode()
    assert "Import images" in client_for(admin_user).get("/").content.decode()


def label_filter_rows(html: str) -> list[tuple[str, str]]:
    block = re.search(r'data-testid="label-filter">(.*?)</ul>', html, re.S).group(1)
    rows = re.findall(r'<span class="name">(.*?)</span>\s*<span class="count">(.*?)</span>', block, re.S)
    return [(re.sub(r"<[^>]+>", "", n).strip(), c) for n, c in rows]


def grid_keys(html: str) -> list[str]:
    return re.findall(r'<span class="cell-key" title="([^"]+)"', html)


def test_grid_label_filter_in_custom_order_with_counts(annotator, shop):
    neck = shop["neck"]
    reorder_labels(neck, [shop["square"].id, shop["round"].id, shop["v"].id])
    c = client_for(annotator)
    html = c.get(f"/p/dresses/?task={neck.id}").content.decode()
    assert label_filter_rows(html) == [("All labels", "6"), ("square", "0"), ("round", "1"), ("v-neck", "2"),
                                       ("no label", "3")]
    # The split narrows the counts too.
    html = c.get(f"/p/dresses/?task={neck.id}&split=train").content.decode()
    assert label_filter_rows(html) == [("All labels", "5"), ("square", "0"), ("round", "1"), ("v-neck", "1"),
                                       ("no label", "3")]
    # The other task has its own labels and counts.
    html = c.get(f"/p/dresses/?task={shop['sleeve'].id}").content.decode()
    assert label_filter_rows(html) == [("All labels", "6"), ("short", "0"), ("long", "1"), ("no label", "5")]


def test_grid_filters_by_label_split_and_status(annotator, shop):
    c = client_for(annotator)
    neck = shop["neck"]
    html = c.get(f"/p/dresses/?task={neck.id}&label={shop['v'].id}").content.decode()
    assert grid_keys(html) == ["dresses/00.jpg", "dresses/02.jpg"]
    assert 'data-testid="shown-count">2<' in html
    html = c.get(f"/p/dresses/?task={neck.id}&label={shop['v'].id}&split=test").content.decode()
    assert grid_keys(html) == ["dresses/02.jpg"]
    html = c.get(f"/p/dresses/?task={neck.id}&label=none").content.decode()
    assert grid_keys(html) == ["dresses/03.jpg", "dresses/broken.jpg", "dresses/gone.jpg"]
    html = c.get("/p/dresses/?status=corrupt").content.decode()
    assert grid_keys(html) == ["dresses/broken.jpg"]
    assert "thumb-problem" in html  # no thumbnail request for a corrupt image
    # Each cell shows the current label of the chosen task, and all of them on hover.
    html = c.get(f"/p/dresses/?task={neck.id}").content.decode()
    first = re.search(r'<li class="cell status-ok"[^>]*>(.*?)</li>', html, re.S).group(1)
    assert '<span class="cell-label">v-neck</span>' in first
    assert "<dt>sleeve</dt><dd>long</dd>" in first
    # A label of another task is ignored rather than trusted.
    html = c.get(f"/p/dresses/?task={neck.id}&label={shop['long'].id}").content.decode()
    assert len(grid_keys(html)) == 6


def test_grid_empty_states(annotator, shop):
    c = client_for(annotator)
    html = c.get(f"/p/dresses/?task={shop['neck'].id}&label={shop['square'].id}").content.decode()
    assert "No images match" in html
    make_project(name="Empty")
    assert "This project has no images yet" in c.get("/p/empty/").content.decode()


def test_grid_pages_by_key_not_offset(annotator, shop):
    project, neck = shop["project"], shop["neck"]
    Image.objects.bulk_create([Image(project=project, key=f"bulk/{i:03d}.jpg", uri=f"file:///b/{i}.jpg",
                                     split="train") for i in range(100)])
    c = client_for(annotator)
    with CaptureQueriesContext(connection) as queries:
        html = c.get(f"/p/dresses/?task={neck.id}").content.decode()
    assert not any("OFFSET" in q["sql"].upper() for q in queries.captured_queries)
    first = grid_keys(html)
    assert len(first) == browse.PAGE_SIZE
    after = re.search(r'rel="next" href="\?[^"]*after=(\d+)"', html).group(1)
    assert int(after) == Image.objects.get(key=first[-1]).id
    with CaptureQueriesContext(connection) as queries:
        html2 = c.get(f"/p/dresses/?task={neck.id}&after={after}").content.decode()
    assert not any("OFFSET" in q["sql"].upper() for q in queries.captured_queries)
    second = grid_keys(html2)
    assert len(first) + len(second) == 106 and not set(first) & set(second)
    assert 'rel="next"' not in html2
    before = re.search(r'rel="prev" href="\?[^"]*before=(\d+)"', html2).group(1)
    assert grid_keys(c.get(f"/p/dresses/?task={neck.id}&before={before}").content.decode()) == first


def test_grid_page_service_walks_forward_and_back(shop):
    f = browse.parse_filter(shop["project"], {})
    keys, after, pages = [], None, []
    while True:
        page = browse.grid_page(f, after=after, size=4)
        pages.append(page)
        keys += [cell.image.key for cell in page.cells]
        if page.next_after is None:
            break
        after = page.next_after
    assert keys == sorted(keys, key=lambda k: Image.objects.get(key=k).id) and len(keys) == 6
    back = browse.grid_page(f, before=pages[1].prev_before, size=4)
    assert [cell.image.key for cell in back.cells] == keys[:4] and back.prev_before is None


# --- the image page --------------------------------------------------------------------

def test_image_page_shows_facets_history_and_neighbours(annotator, shop):
    image = shop["images"][0]
    retag_image(image=image, task=shop["neck"], label=shop["round"], by=annotator, expected_version=1)
    c = client_for(annotator)
    html = c.get(f"/images/{image.id}/?task={shop['neck'].id}&label={shop['round'].id}").content.decode()
    # Facets: the current label of each task, the labels in order with their keys.
    facets = re.findall(r'data-task-name="(\w+)"\s+data-version="(\d+)" data-current="(\d*)"', html)
    assert facets == [("neckline", "2", str(shop["round"].id)), ("sleeve", "1", str(shop["long"].id))]
    neck_block = html.split('data-task-name="neckline"')[1].split("</section>")[0]
    assert re.findall(r'<kbd>(\d)</kbd><span>([^<]+)</span>', neck_block) == [
        ("1", "v-neck"), ("2", "round"), ("3", "square")]
    # History: newest first, who / from / to / source.
    rows = re.findall(r'<tr data-event="\d+">(.*?)</tr>', html, re.S)
    cells = [[re.sub(r"<[^>]+>", "", td).strip() for td in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)][1:]
             for row in rows]
    assert cells == [
        ["neckline", "v-neck", "round", annotator.username, "annotator"],
        ["sleeve", "none", "long", "—", "import"],
        ["neckline", "none", "v-neck", "—", "import"],
    ]
    # Within "neckline: round" the next image is image 1, the other round one; nothing before.
    assert (f'data-next-url="/images/{shop["images"][1].id}/?task={shop["neck"].id}&amp;label={shop["round"].id}"'
            in html)
    assert 'data-prev-url' not in html
    html = c.get(f"/images/{shop['images'][1].id}/").content.decode()
    assert f'data-next-url="/images/{shop["images"][2].id}/?task={shop["neck"].id}"' in html
    assert f'data-prev-url="/images/{shop["images"][0].id}/?task={shop["neck"].id}"' in html


def test_image_original_and_thumbnail_bytes(annotator, shop):
    c = client_for(annotator)
    image = shop["images"][0]
    r = c.get(f"/images/{image.id}/original")
    assert r.status_code == 200 and r["Content-Type"] == "image/jpeg"
    with open(image.uri.removeprefix("file://"), "rb") as f:
        assert r.content == f.read()
    r = c.get(f"/images/{image.id}/thumb.jpg")
    assert r.status_code == 200 and r["Content-Type"] == "image/jpeg"
    assert PILImage.open(io.BytesIO(r.content)).size == (40, 30)
    assert c.get(f"/images/{shop['corrupt'].id}/original").status_code == 404
    assert c.get(f"/images/{shop['corrupt'].id}/thumb.jpg").status_code == 404


def test_corrupt_image_page_shows_its_reason(annotator, shop):
    html = client_for(annotator).get(f"/images/{shop['corrupt'].id}/").content.decode()
    assert "truncated image data (image file is truncated)" in html
    assert "/original" not in html


def test_problems_page_lists_corrupt_and_missing(annotator, shop):
    html = client_for(annotator).get("/p/dresses/problems/").content.decode()
    corrupt = html.split('data-testid="corrupt"')[1].split("</table>")[0]
    missing = html.split('data-testid="missing"')[1].split("</table>")[0]
    assert "dresses/broken.jpg" in corrupt and "truncated image data" in corrupt
    assert "dresses/gone.jpg" in missing and "dresses/broken.jpg" not in missing
    assert "dresses/00.jpg" not in html


def test_annotators_see_the_image_key_not_where_the_file_lives(annotator, scientist, admin_user, shop):
    """The image page showed everyone the server path (file:///tmp/.../var/demo/...)."""
    image, missing = shop["images"][0], shop["missing"]
    folder = image.uri.rsplit("/", 1)[0]
    html = client_for(annotator).get(f"/images/{image.id}/").content.decode()
    assert 'data-testid="image-key"' in html and "dresses/00.jpg" in html
    assert "file://" not in html and folder not in html and 'data-testid="image-uri"' not in html
    problems = client_for(annotator).get("/p/dresses/problems/").content.decode()
    assert "dresses/gone.jpg" in problems and missing.uri not in problems and "Where it was" not in problems
    for user in (scientist, admin_user):
        html = client_for(user).get(f"/images/{image.id}/").content.decode()
        assert 'data-testid="image-uri"' in html and image.uri in html
        assert "Where it was" in client_for(user).get("/p/dresses/problems/").content.decode()


# --- retag from the page (through the API, as static/image.js does) ---------------------

def post_retag(c, image, **body):
    return c.post(f"/api/images/{image.id}/retag/", json.dumps(body), content_type="application/json")


def test_retag_sets_label_and_the_history_shows_it(annotator, shop):
    c = client_for(annotator)
    image = shop["images"][1]
    html = c.get(f"/images/{image.id}/").content.decode()
    assert f'data-retag-url="/api/images/{image.id}/retag/"' in html
    assert f'data-history-url="/api/images/{image.id}/history/"' in html
    r = post_retag(c, image, task=shop["neck"].id, label=shop["square"].id, expected_version=1)
    assert r.status_code == 200
    data = r.json()
    assert data["event"] is not None
    assert {k: data["annotation"][k] for k in ("task", "label", "version", "verified")} == {
        "task": shop["neck"].id, "label": shop["square"].id, "version": 2, "verified": True}
    history = c.get(f"/api/images/{image.id}/history/").json()
    assert history[0] | {"id": 0, "when": ""} == {
        "id": 0, "task": "neckline", "from": "round", "to": "square", "by": annotator.username,
        "source": "annotator", "source_key": "annotator", "reference": "", "when": ""}
    assert Annotation.objects.get(image=image, task=shop["neck"]).label == shop["square"]
    # An image without a label for the task: the page saw version 0.
    r = post_retag(c, shop["images"][3], task=shop["sleeve"].id, label=shop["short"].id, expected_version=0)
    assert r.status_code == 200 and r.json()["annotation"]["version"] == 1


def test_retag_conflict_overwrites_nothing_and_says_what_is_there_now(annotator, scientist, shop):
    image = shop["images"][1]
    retag_image(image=image, task=shop["neck"], label=shop["v"], by=scientist, expected_version=1)
    c = client_for(annotator)
    r = post_retag(c, image, task=shop["neck"].id, label=shop["square"].id, expected_version=1)
    assert r.status_code == 409
    data = r.json()
    assert "changed since you saw it" in data["detail"]
    assert data["current"]["label_name"] == "v-neck" and data["current"]["version"] == 2
    assert data["current"]["updated_by"] == scientist.username
    assert c.get(f"/api/images/{image.id}/history/").json()[0]["by"] == scientist.username
    assert Annotation.objects.get(image=image, task=shop["neck"]).label == shop["v"]
    assert LabelEvent.objects.filter(image=image, by=annotator).count() == 0


def test_retag_endpoint_rejects_bad_requests_and_needs_csrf(annotator, shop):
    c = client_for(annotator)
    image = shop["images"][1]
    assert post_retag(c, image, task=shop["neck"].id, label=shop["long"].id, expected_version=1).status_code == 400
    assert post_retag(c, image, task=shop["neck"].id).status_code == 400
    _, other_task, other_labels = make_project(name="Shoes", task="type", labels=("boot",))
    assert post_retag(c, image, task=other_task.id, label=other_labels[0].id,
                      expected_version=0).status_code == 400
    assert c.get(f"/api/images/{image.id}/retag/").status_code == 405
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(annotator)
    assert post_retag(strict, image, task=shop["neck"].id, label=shop["square"].id,
                      expected_version=1).status_code == 403
    assert Annotation.objects.get(image=image, task=shop["neck"]).label == shop["round"]


# --- escaping ---------------------------------------------------------------------------

def test_user_data_is_escaped_everywhere(admin_user, shop):
    evil = ensure_labels(shop["neck"], [XSS])[XSS]
    image = shop["images"][3]
    retag_image(image=image, task=shop["neck"], label=evil, by=admin_user, expected_version=0)
    shop["project"].description = XSS
    shop["project"].save()
    Image.objects.filter(id=shop["corrupt"].id).update(status_reason=XSS)
    c = client_for(admin_user)
    for url in ["/", f"/p/dresses/?task={shop['neck'].id}", f"/p/dresses/?task={shop['neck'].id}&label={evil.id}",
                f"/images/{image.id}/", f"/images/{shop['corrupt'].id}/", "/p/dresses/problems/",
                "/p/dresses/labels/"]:
        html = c.get(url).content.decode()
        assert XSS not in html, url
    assert ESCAPED in c.get(f"/images/{image.id}/").content.decode()
    assert ESCAPED in c.get(f"/p/dresses/?task={shop['neck'].id}").content.decode()


# --- admin pages ------------------------------------------------------------------------

def test_label_order_page_reorders(admin_user, shop):
    c = client_for(admin_user)
    neck = shop["neck"]
    html = c.get("/p/dresses/labels/").content.decode()
    block = html.split('data-testid="order-neckline"')[1].split("</ol>")[0]
    assert re.findall(r'<span class="name">([^<]+)</span>', block) == ["v-neck", "round", "square"]
    r = c.post("/p/dresses/labels/", {"task": neck.id, "move": f"{shop['square'].id}:up"})
    assert r.status_code == 302
    assert [lb.name for lb in neck.labels.order_by("position")] == ["v-neck", "square", "round"]
    r = c.post("/p/dresses/labels/", {"task": neck.id, "order": f"{shop['round'].id},{shop['v'].id},{shop['square'].id}"})
    assert [lb.name for lb in neck.labels.order_by("position")] == ["round", "v-neck", "square"]
    # An order that leaves a label out is refused, and says so.
    r = c.post("/p/dresses/labels/", {"task": neck.id, "order": f"{shop['round'].id}"}, follow=True)
    assert "Could not reorder neckline" in r.content.decode()
    assert [lb.name for lb in neck.labels.order_by("position")] == ["round", "v-neck", "square"]
    # The image page uses the new order for the number keys.
    html = c.get(f"/images/{shop['images'][0].id}/").content.decode()
    block = html.split('data-task-name="neckline"')[1].split("</section>")[0]
    assert re.findall(r'<kbd>(\d)</kbd><span>([^<]+)</span>', block) == [("1", "round"), ("2", "v-neck"),
                                                                         ("3", "square")]


def test_users_page_creates_users_and_sets_roles(admin_user, annotator):
    from django.contrib.auth import get_user_model

    from labeling.services.roles import role_of

    c = client_for(admin_user)
    html = c.get("/manage/users/").content.decode()
    assert f'data-user="{annotator.username}"' in html
    r = c.post("/manage/users/", {"action": "create", "username": "nadia", "password": "a-long-password",
                                  "role": "scientist"})
    assert r.status_code == 302
    nadia = get_user_model().objects.get(username="nadia")
    assert role_of(nadia) == "scientist" and nadia.check_password("a-long-password")
    r = c.post("/manage/users/", {"action": "create", "username": "nadia", "password": "x", "role": "admin"})
    assert r.status_code == 200 and "This username is taken." in r.content.decode()
    c.post("/manage/users/", {"action": "set_role", "user": annotator.id, "role": "admin"})
    annotator.refresh_from_db()
    assert role_of(get_user_model().objects.get(id=annotator.id)) == "admin"
    r = c.post("/manage/users/", {"action": "set_role", "user": admin_user.id, "role": "annotator"}, follow=True)
    assert "cannot take away your own admin role" in r.content.decode()
    assert role_of(get_user_model().objects.get(id=admin_user.id)) == "admin"


def test_storage_roots_page_adds_and_removes(admin_user, tmp_path):
    c = client_for(admin_user)
    r = c.post("/manage/storage-roots/", {"action": "add", "uri": tmp_path.as_uri(), "note": "photos"})
    assert r.status_code == 302
    root = StorageRoot.objects.get()
    assert root.note == "photos"
    assert root.uri in c.get("/manage/storage-roots/").content.decode()
    r = c.post("/manage/storage-roots/", {"action": "add", "uri": "http://169.254.169.254/", "note": ""})
    assert r.status_code == 200 and "not allowed" in r.content.decode()
    c.post("/manage/storage-roots/", {"action": "remove", "root": root.id})
    assert not StorageRoot.objects.exists()


def test_import_form_refuses_sources_outside_roots(admin_user, shop, tmp_path):
    c = client_for(admin_user)
    r = c.post("/imports/", {"project": shop["project"].id, "kind": "folder", "source_uri": "/etc",
                             "task": "neckline"})
    assert r.status_code == 200
    html = r.content.decode()
    assert "Refused:" in html and "outside every allowed storage root" in html
    assert not ImportJob.objects.exists()
    # A refused source for a new project leaves no empty project behind.
    r = c.post("/imports/", {"project": "__new__", "new_project": "Coats", "kind": "folder", "source_uri": "/etc",
                             "task": "type"})
    assert "Refused:" in r.content.decode()
    assert not shop["project"].__class__.objects.filter(name="Coats").exists()
    # Folder layouts need a task name.
    r = c.post("/imports/", {"project": shop["project"].id, "kind": "folder", "source_uri": "/etc", "task": ""})
    assert "Folder layouts need the task" in r.content.decode()


def test_import_form_starts_a_job_and_its_page_reports_progress(admin_user, tmp_path):
    from labeling.services.imports import run_import
    from labeling.services.storage_roots import add_root

    folder = tmp_path / "coats"
    for split, label, n in [("train", "parka", 2), ("train", "trench", 1), ("test", "parka", 1)]:
        (folder / split / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (folder / split / label / f"{i}.jpg").write_bytes(jpeg_bytes((10 * i, 20, 30)))
    (folder / "train" / "parka" / "bad.jpg").write_bytes(b"not a jpeg at all")
    add_root(tmp_path.as_uri())
    c = client_for(admin_user)
    r = c.post("/imports/", {"project": "__new__", "new_project": "Coats", "kind": "folder",
                             "source_uri": folder.as_uri(), "task": "type"})
    assert r.status_code == 302
    job = ImportJob.objects.get()
    assert r["Location"] == f"/imports/{job.id}/"
    assert job.project.name == "Coats" and job.options == {"task": "type"} and job.created_by == admin_user
    html = c.get(f"/imports/{job.id}/").content.decode()
    assert f'data-status-url="/api/imports/{job.id}/"' in html  # what static/import_job.js polls
    status = c.get(f"/api/imports/{job.id}/").json()
    assert status["state"] == "queued" and status["finished"] is False
    run_import(job)
    status = c.get(f"/api/imports/{job.id}/").json()
    assert status["finished"] is True and status["state"] == "done"
    assert (status["total"], status["processed"], status["added"], status["corrupt"]) == (5, 5, 4, 1)
    html = c.get(f"/imports/{job.id}/").content.decode()
    assert 'data-k="added">4<' in html and 'data-k="corrupt">1<' in html
    # The tiles add up to the files: a corrupt file is counted as corrupt, not also as added.
    tiles = {k: int(n) for k, n in re.findall(r'data-k="(\w+)">(\d+)<', html)}
    assert set(tiles) == set(OUTCOMES) and sum(tiles.values()) == 5
    assert sum(status[k] for k in OUTCOMES) == status["processed"]
    assert job.project.slug in c.get("/imports/").content.decode()


def test_import_help_shows_the_manifest_columns_the_import_reads(admin_user, tmp_path):
    from labeling.services.storage_roots import add_root

    c = client_for(admin_user)
    shown = re.search(r'data-testid="manifest-columns">([^<]+)<', c.get("/imports/").content.decode()).group(1)
    assert shown == MANIFEST_COLUMNS.replace("<", "&lt;").replace(">", "&gt;")
    # and a manifest without a label column is refused with the same words
    (tmp_path / "m.csv").write_text("uri,split\na.jpg,train\n")
    add_root(tmp_path.as_uri())
    project, _, _ = make_project()
    r = c.post("/imports/", {"project": project.id, "kind": "manifest", "source_uri": str(tmp_path / "m.csv")})
    job = ImportJob.objects.get()
    from labeling.services.imports import run_import

    run_import(job)
    job.refresh_from_db()
    assert r.status_code == 302 and job.state == "failed" and job.message.endswith(f"expected {MANIFEST_COLUMNS}")

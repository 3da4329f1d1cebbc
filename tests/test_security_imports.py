"""Attacks through imports and stored files (issue 11, items 1, 2 and 4).

Each test is the attack as it was tried: a zip whose member names are percent-encoded to
climb out of the store and drop a ``.pth`` (code that runs at the next Python start), two
members that land on one file, a file swapped for a symlink after its import, a weights
file swapped the same way, a bare ``file://`` root, a zip bomb, a NUL byte in a manifest.
"""
import io
import os
import site
import sysconfig
import zipfile
from pathlib import Path

import pytest
import torch
from django.test import Client
from PIL import Image as PILImage

from labeling.models import Annotation, Image, ImageStatus, ImportJob, LabelEvent, StorageRoot
from labeling.services.imports import run_import, start_import
from labeling.services.projects import project_storage_uri
from labeling.services.storage_roots import SourceRefused, add_root, check_allowed
from labeling.services.thumbnails import NoThumbnail, thumbnail_bytes
from mlcore import storage
from tests.image_samples import jpeg, png

pytestmark = pytest.mark.django_db

Kind = ImportJob.Kind


def encoded(text: str) -> str:
    """Every character percent-encoded, as the attack spelled ``../``: ``%2e%2e%2f``."""
    return "".join(f"%{b:02x}" for b in text.encode())


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return path


def polyglot_png(line: str) -> bytes:
    """A PNG that decodes, with a text chunk holding ``line`` on a line of its own: a valid
    ``.pth`` too (site.py executes lines that start with ``import``)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("c", f"\n{line}\n")
    out = io.BytesIO()
    PILImage.new("RGB", (8, 8), (1, 2, 3)).save(out, "PNG", pnginfo=info)
    return out.getvalue()


def import_zip(project, archive) -> ImportJob:
    job = run_import(start_import(project=project, kind=Kind.FOLDER, source_uri=str(archive), enqueue=False))
    assert job.state == ImportJob.State.DONE, job.message
    return job


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def site_dirs() -> list[Path]:
    dirs = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()}
    return [Path(d) for d in dirs if Path(d).is_dir()]


# --------------------------------------------------------------------------- item 1: zip slip

def test_percent_encoded_zip_slip_writes_nothing_outside_the_store(project, data, tmp_path):
    """The exploit of item 1: ``%2e%2e%2f`` climbs, ``?`` before ``.png`` passes the extension
    rule; the target is a fake site-packages in the test's folder (and the real one is
    checked too). Nothing may land outside the store, and no ``.pth`` anywhere outside it."""
    venv = tmp_path / "venv" / "lib" / "python3" / "site-packages"
    venv.mkdir(parents=True)
    marker = tmp_path / "pwned"
    payload = f"import os; open({str(marker)!r}, 'w').write('ran')"
    tag = os.urandom(4).hex()
    climb = "../" * 40 + str(venv).lstrip("/")  # past the filesystem root, then down again
    real_site = site_dirs()
    members = {
        f"train/cat/{encoded(climb + f'/retag-{tag}-a.pth')}?.png": payload.encode() + b"\n",
        f"train/cat/{encoded(climb + f'/retag-{tag}-b.pth')}?.png": polyglot_png(payload),
        # Short enough to be a legal file name: written (it is an image), but as a literal name.
        f"train/cat/{encoded('../../../../../../x.pth')}?.png": polyglot_png(payload),
        f"train/dog/{encoded('..')}%2f{encoded('..')}%2fescape.png": png(),
        "train/cat/fine.png": png(),
    }
    archive = make_zip(data / "evil.zip", members)
    before = files_under(tmp_path)

    job = import_zip(project, archive)

    store = storage.local_path(project_storage_uri(project)).resolve()
    written = files_under(tmp_path) - before
    outside = {p for p in written if not p.resolve().is_relative_to(store)}
    assert outside == set(), outside
    assert not marker.exists()
    assert not [p for p in written if p.suffix == ".pth" and not p.resolve().is_relative_to(store)]
    assert list(venv.iterdir()) == []
    for d in real_site:
        assert not list(d.glob(f"retag-{tag}-*")), d
    # Every image's URI is canonical and lies in the store; the valid ones are readable there.
    for im in Image.objects.filter(project=project):
        assert im.uri == storage.to_uri(im.uri), im.uri
        assert storage.local_path(im.uri).resolve().is_relative_to(store), im.uri
    fine = Image.objects.get(project=project, key="train/cat/fine.png")
    assert storage.read_bytes(fine.uri) == png()
    assert job.problems_total >= 1  # the non-image member is reported, not stored


def test_only_bytes_that_decode_are_stored(project, data):
    archive = make_zip(data / "mixed.zip", {"train/cat/ok.jpg": jpeg(), "train/cat/not-an-image.jpg": b"#!/bin/sh\n"})
    job = import_zip(project, archive)
    bad = Image.objects.get(project=project, key="train/cat/not-an-image.jpg")
    assert (job.added, job.corrupt, bad.status) == (1, 1, ImageStatus.CORRUPT)
    store = storage.local_path(project_storage_uri(project, "originals"))
    assert sorted(p.name for p in store.rglob("*") if p.is_file()) == ["ok.jpg"]


def test_two_members_that_would_share_a_file_get_one_each(project, data):
    """``x?.png`` and ``x#.png`` were both written to ``x`` (query and fragment cut off): the
    second image overwrote the first one's bytes."""
    red, green = png((200, 0, 0)), png((0, 200, 0))
    archive = make_zip(data / "twins.zip", {"train/cat/x?.png": red, "train/cat/x#.png": green,
                                           "train/cat/x%3F.png": jpeg()})
    job = import_zip(project, archive)
    assert job.added == 3, job.problems
    images = {im.key: im for im in Image.objects.filter(project=project)}
    assert len({im.uri for im in images.values()}) == 3
    assert storage.read_bytes(images["train/cat/x?.png"].uri) == red
    assert storage.read_bytes(images["train/cat/x#.png"].uri) == green
    assert storage.read_bytes(images["train/cat/x%3F.png"].uri) == jpeg()


def test_a_symlink_planted_in_the_store_is_not_followed_on_write(project, data, tmp_path):
    """Containment is checked on the final resolved path right before the write: a folder of
    the store replaced by a symlink to elsewhere is refused, not written through."""
    archive = make_zip(data / "set.zip", {"train/cat/a.png": png()})
    import_zip(project, archive)
    original = Image.objects.get(project=project, key="train/cat/a.png")
    folder = storage.local_path(original.uri).parent
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()
    folder.symlink_to(elsewhere, target_is_directory=True)
    make_zip(archive, {"train/cat/a.png": png((9, 9, 9))})  # changed bytes: written again

    job = import_zip(project, archive)
    assert list(elsewhere.iterdir()) == []
    assert any("outside" in p["reason"] for p in job.problems), job.problems


# --------------------------------------------------------------------------- item 2: read-time containment

@pytest.fixture
def annotator_client(annotator):
    client = Client()
    client.force_login(annotator)
    return client


def test_original_swapped_for_a_symlink_is_not_served(project, data, tmp_path, annotator_client):
    photo = data / "ds/train/cat/a.jpg"
    photo.parent.mkdir(parents=True)
    photo.write_bytes(jpeg())
    run_import(start_import(project=project, kind=Kind.FOLDER, source_uri=str(data / "ds"), enqueue=False))
    image = Image.objects.get(project=project, key="train/cat/a.jpg")
    assert annotator_client.get(f"/images/{image.id}/original").content == jpeg()

    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"db password: hunter2")
    photo.unlink()
    photo.symlink_to(secret)
    response = annotator_client.get(f"/images/{image.id}/original")
    assert response.status_code == 404
    assert b"hunter2" not in response.content


def test_thumbnail_is_not_made_from_a_swapped_original(project, data, tmp_path):
    photo = data / "ds/train/cat/a.jpg"
    photo.parent.mkdir(parents=True)
    photo.write_bytes(jpeg())
    run_import(start_import(project=project, kind=Kind.FOLDER, source_uri=str(data / "ds"), enqueue=False))
    image = Image.objects.get(project=project, key="train/cat/a.jpg")
    storage.local_path(image.thumbnail_uri).unlink()  # made again from the original on demand
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(jpeg((0, 0, 255)))
    photo.unlink()
    photo.symlink_to(outside)
    with pytest.raises(NoThumbnail, match="outside"):
        thumbnail_bytes(image)


def test_weights_swapped_for_a_symlink_are_not_read(tmp_path):
    from mlcore.models import load_state_dict

    weights = tmp_path / "roots" / "w.pt"
    weights.parent.mkdir()
    torch.save({"w": torch.zeros(2)}, weights)
    uri = storage.to_uri(weights)  # what the run checked and stored
    assert set(load_state_dict(uri)) == {"w"}
    other = tmp_path / "other.pt"
    torch.save({"stolen": torch.ones(2)}, other)
    weights.unlink()
    weights.symlink_to(other)
    with pytest.raises(ValueError, match="resolves to"):
        load_state_dict(uri)


@pytest.mark.parametrize("bare", ["file://", "file:///", "/", "file://localhost/"])
def test_a_bare_file_root_is_not_the_whole_disk(bare, settings):
    with pytest.raises(SourceRefused, match="whole disk"):
        add_root(bare)
    settings.IMPORT_ROOTS = [bare]
    StorageRoot.objects.create(uri=bare)  # an old row, written before the rule
    with pytest.raises(SourceRefused, match="outside every allowed storage root"):
        check_allowed("/etc/passwd")


# --------------------------------------------------------------------------- item 4: archives and rows

def test_zip_bomb_members_are_refused_before_they_are_read(project, data, settings):
    """Compressible non-images named like images: refused by their ratio, nothing stored."""
    settings.IMPORT_ZIP_MAX_RATIO = 50
    bomb = bytes(8 << 20)  # 8 MiB of zeros compress about 1000:1
    archive = make_zip(data / "bomb.zip", {**{f"train/cat/{i}.png": bomb for i in range(5)},
                                           "train/cat/ok.jpg": jpeg()})
    assert archive.stat().st_size < 200_000
    job = import_zip(project, archive)
    assert (job.added, job.refused) == (1, 5), job.problems
    assert all("ratio" in p["reason"] for p in job.problems)
    store = storage.local_path(project_storage_uri(project))
    assert sum(p.stat().st_size for p in store.rglob("*") if p.is_file()) < 100_000


def test_zip_over_the_total_expanded_size_is_refused(project, data, settings):
    settings.IMPORT_ZIP_MAX_EXPANDED_BYTES = 4000
    archive = make_zip(data / "big.zip", {f"train/cat/{i}.png": png((i, i, i), (40, 40)) for i in range(40)})
    job = run_import(start_import(project=project, kind=Kind.FOLDER, source_uri=str(archive), enqueue=False))
    assert job.state == ImportJob.State.FAILED
    assert "expand" in job.message and "IMPORT_ZIP_MAX_EXPANDED_BYTES" in job.message
    assert not Image.objects.filter(project=project).exists()
    store = storage.local_path(project_storage_uri(project))
    assert not store.exists() or not [p for p in store.rglob("*") if p.is_file()]


def test_nul_byte_and_broken_uris_in_a_manifest_are_row_problems(project, data):
    (data / "img").mkdir()
    (data / "img/a.jpg").write_bytes(jpeg())
    (data / "m.csv").write_bytes(b"uri,split,label\n"
                                b"img/a.jpg,train,cat\n"
                                b"img/\x00b.jpg,train,cat\n"
                                b"file:///etc/\x00passwd,train,cat\n"
                                b"s3:///no-bucket.jpg,train,cat\n"
                                b"s3://bucket/%00.jpg?x,train,cat\n")
    job = run_import(start_import(project=project, kind=Kind.MANIFEST, source_uri=str(data / "m.csv"),
                                  enqueue=False))
    assert job.state == ImportJob.State.DONE, job.message
    assert (job.added, job.refused) == (1, 4), job.problems
    assert {p["row"] for p in job.problems} == {3, 4, 5, 6}
    assert Annotation.objects.filter(image__project=project).count() == 1
    assert LabelEvent.objects.filter(image__project=project).count() == 1

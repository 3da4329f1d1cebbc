"""storage.py and images.py, the two modules the web app shares with mlcore."""
import io

import numpy as np
import pytest
from PIL import Image

from mlcore import storage
from mlcore.images import CorruptImage, decode


def _bytes(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_local_uris_read_write_list(tmp_path):
    uri = storage.to_uri(tmp_path / "a b" / "x.bin")
    assert uri.startswith("file://") and "%20" in uri
    storage.write_bytes(uri, b"hello")
    assert storage.read_bytes(uri) == b"hello" and storage.exists(uri)
    storage.write_bytes(storage.join(storage.to_uri(tmp_path), "a b", "y.bin"), b"!")
    files = list(storage.list_files(storage.to_uri(tmp_path)))
    assert [storage.relative_key(storage.to_uri(tmp_path), f.uri) for f in files] == ["a b/x.bin", "a b/y.bin"]
    with pytest.raises(ValueError):
        storage.to_uri("ftp://x/y")


def test_s3_uris_read_write_list(s3):
    uri = f"s3://{s3.bucket}/p/q.txt"
    assert not storage.exists(uri)
    storage.write_bytes(uri, b"data", "text/plain")
    assert storage.exists(uri) and storage.read_bytes(uri) == b"data"
    assert [f.uri for f in storage.list_files(f"s3://{s3.bucket}/p")] == [uri]
    assert storage.split_s3(uri) == (s3.bucket, "p/q.txt")


def test_a_file_is_written_from_where_it_stands_in_pieces_and_again_whole_on_a_retry(tmp_path, s3, monkeypatch):
    """A large file (the export's CSV) is copied, not read into memory; a PUT that failed half way
    is sent again from the start position, not from where the failed try stopped."""
    body = io.BytesIO(b"skip:" + b"x" * 200_000)
    body.seek(5)
    local = storage.to_uri(tmp_path / "f.csv")
    storage.write_bytes(local, body)
    assert storage.read_bytes(local) == b"x" * 200_000

    client, tries = storage.s3_client(), []

    class Flaky:
        def put_object(self, **kw):
            tries.append(kw["Body"].tell())
            if len(tries) == 1:
                kw["Body"].read(10)  # half sent
                raise ConnectionError("reset by peer")
            return client.put_object(**kw)

    monkeypatch.setattr(storage, "s3_client", lambda: Flaky())
    monkeypatch.setattr(storage.time, "sleep", lambda s: None)
    body.seek(5)
    storage.write_bytes(f"s3://{s3.bucket}/f.csv", body, "text/csv")
    monkeypatch.undo()
    assert tries == [5, 5]
    assert client.get_object(Bucket=s3.bucket, Key="f.csv")["Body"].read() == b"x" * 200_000


def test_decode_normalises_modes_and_orientation():
    assert decode(_bytes(Image.new("CMYK", (4, 3)), "JPEG")).mode == "RGB"
    rgba = Image.new("RGBA", (2, 2), (255, 0, 0, 0))
    assert decode(_bytes(rgba, "PNG")).getpixel((0, 0)) == (255, 255, 255)  # transparent -> white
    grey16 = Image.fromarray(np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000)
    assert decode(_bytes(grey16, "PNG")).size == (4, 3)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    assert decode(_bytes(Image.new("RGB", (8, 4)), "JPEG", exif=exif)).size == (4, 8)


@pytest.mark.parametrize("data,reason", [(b"", "empty"), (b"hello", "not an image")])
def test_decode_rejects_with_a_reason(data, reason):
    with pytest.raises(CorruptImage, match=reason):
        decode(data)


def test_decode_rejects_truncated_and_huge_images():
    full = _bytes(Image.new("RGB", (64, 64), (10, 20, 30)), "PNG")
    with pytest.raises(CorruptImage):
        decode(full[: len(full) // 2])
    with pytest.raises(CorruptImage, match="decompression bomb"):
        decode(_bytes(Image.new("L", (100, 100)), "PNG"), max_pixels=5000)

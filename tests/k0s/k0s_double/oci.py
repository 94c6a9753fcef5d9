"""OCI image archives: a tar of an OCI image layout (`oci-layout`, `index.json`,
`blobs/sha256/...`), the format k0s imports from `<data-dir>/images/`.

`read_archive` imports as containerd would: it names images after the `io.containerd.image.name`
annotation (else `org.opencontainers.image.ref.name`) of each index entry and checks the digest
of every blob it reads. `write_archive` builds tiny deterministic images for the lab's bundles.
"""

import hashlib
import io
import json
import os
import tarfile

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
NAME_ANNOTATION = "io.containerd.image.name"
REF_ANNOTATION = "org.opencontainers.image.ref.name"
# Index entries nest at most this deep (an index of per-platform indexes of manifests).
MAX_INDEX_DEPTH = 4
MAX_JSON_BLOB = 4 * 1024 * 1024


class ArchiveError(Exception):
    """An archive that containerd would not import; the message names the archive and the problem."""


def _digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def read_archive(path):
    """Returns [(image name, manifest digest)] of the images in the archive at `path`."""
    try:
        archive = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError) as error:
        raise ArchiveError("%s is not a tar archive: %s" % (path, error))
    with archive:
        members = {}
        for member in archive.getmembers():
            name = member.name
            while name.startswith("./"):
                name = name[2:]
            if member.isfile():
                members[name] = member

        def blob(digest, verify=True, max_size=None):
            algorithm, _, hex_digest = digest.partition(":")
            member = members.get("blobs/%s/%s" % (algorithm, hex_digest))
            if member is None:
                raise ArchiveError("%s: blob %s is missing" % (path, digest))
            if max_size is not None and member.size > max_size:
                raise ArchiveError("%s: blob %s is larger than %d bytes" % (path, digest, max_size))
            hasher = hashlib.sha256()
            chunks = []
            with archive.extractfile(member) as stream:
                while True:
                    chunk = stream.read(1 << 20)
                    if not chunk:
                        break
                    hasher.update(chunk)
                    if max_size is not None:
                        chunks.append(chunk)
            computed = "sha256:" + hasher.hexdigest()
            if verify and computed != digest:
                raise ArchiveError("%s: blob %s has digest %s" % (path, digest, computed))
            return b"".join(chunks)

        if "index.json" not in members:
            raise ArchiveError("%s: no index.json, not an OCI image layout" % path)
        with archive.extractfile(members["index.json"]) as stream:
            try:
                index = json.loads(stream.read(MAX_JSON_BLOB))
            except ValueError as error:
                raise ArchiveError("%s: index.json is not JSON: %s" % (path, error))

        images = []

        def walk(descriptor, name, depth):
            media_type = descriptor.get("mediaType")
            digest = descriptor.get("digest", "")
            if media_type == INDEX_TYPE or media_type == "application/vnd.docker.distribution.manifest.list.v2+json":
                if depth >= MAX_INDEX_DEPTH:
                    raise ArchiveError("%s: image indexes nest deeper than %d" % (path, MAX_INDEX_DEPTH))
                nested = json.loads(blob(digest, max_size=MAX_JSON_BLOB))
                for child in nested.get("manifests", []):
                    walk(child, name, depth + 1)
                return
            manifest = json.loads(blob(digest, max_size=MAX_JSON_BLOB))
            config = manifest.get("config") or {}
            if config.get("digest"):
                blob(config["digest"], max_size=MAX_JSON_BLOB)
            for layer in manifest.get("layers", []):
                blob(layer["digest"])
            images.append((name, digest))

        for entry in index.get("manifests", []):
            annotations = entry.get("annotations") or {}
            name = annotations.get(NAME_ANNOTATION) or annotations.get(REF_ANNOTATION)
            if not name:
                raise ArchiveError("%s: index entry %s has no image name annotation" % (path, entry.get("digest")))
            walk(entry, name, 0)
        return images


def _tar_entry(tar, name, data=None, directory=False):
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if directory:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        tar.addfile(info)
    else:
        info.mode = 0o644
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def _canonical_json(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def tiny_image(reference, platform=("linux", "amd64")):
    """Builds the blobs of a one-layer image whose only file names the reference.

    Returns (manifest bytes, {digest: bytes})."""
    layer_buffer = io.BytesIO()
    with tarfile.open(fileobj=layer_buffer, mode="w", format=tarfile.USTAR_FORMAT) as layer:
        _tar_entry(layer, "etc/", directory=True)
        _tar_entry(layer, "etc/image-reference", (reference + "\n").encode())
    layer_bytes = layer_buffer.getvalue()
    config = {
        "architecture": platform[1],
        "os": platform[0],
        "config": {"Labels": {"org.opencontainers.image.title": reference}},
        "rootfs": {"type": "layers", "diff_ids": [_digest(layer_bytes)]},
    }
    config_bytes = _canonical_json(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": _digest(config_bytes), "size": len(config_bytes)},
        "layers": [{"mediaType": LAYER_TYPE, "digest": _digest(layer_bytes), "size": len(layer_bytes)}],
    }
    manifest_bytes = _canonical_json(manifest)
    blobs = {_digest(layer_bytes): layer_bytes, _digest(config_bytes): config_bytes, _digest(manifest_bytes): manifest_bytes}
    return manifest_bytes, blobs


def write_archive(path, references):
    """Writes an OCI archive with a tiny image per reference; the same input gives the same bytes."""
    blobs = {}
    manifests = []
    for reference in sorted(set(references)):
        manifest_bytes, image_blobs = tiny_image(reference)
        blobs.update(image_blobs)
        manifests.append(
            {
                "mediaType": MANIFEST_TYPE,
                "digest": _digest(manifest_bytes),
                "size": len(manifest_bytes),
                "annotations": {NAME_ANNOTATION: reference, REF_ANNOTATION: reference},
                "platform": {"architecture": "amd64", "os": "linux"},
            }
        )
    index = {"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": manifests}
    temporary = path + ".tmp"
    with open(temporary, "wb") as file:
        with tarfile.open(fileobj=file, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            _tar_entry(tar, "oci-layout", _canonical_json({"imageLayoutVersion": "1.0.0"}))
            _tar_entry(tar, "index.json", _canonical_json(index))
            _tar_entry(tar, "blobs/", directory=True)
            _tar_entry(tar, "blobs/sha256/", directory=True)
            for digest in sorted(blobs):
                _tar_entry(tar, "blobs/sha256/" + digest.split(":", 1)[1], blobs[digest])
    os.replace(temporary, path)
    return [(m["annotations"][NAME_ANNOTATION], m["digest"]) for m in manifests]

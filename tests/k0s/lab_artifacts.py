"""Writes the lab's artifacts: a k0s airgap bundle (an OCI archive with a tiny image for each
image `k0s airgap list-images` prints) for every k0s version that has a wrapper in bin/, or an
OCI archive of any images given on the command line.

The output is deterministic: the same input gives the same bytes, so bundle digests can be
pinned.
"""

import hashlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from k0s_double import oci, versions  # noqa: E402

BIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bin")


def double_versions():
    return sorted(name[len("k0s-") :] for name in os.listdir(BIN) if name.startswith("k0s-v"))


def main(argv):
    if argv and argv[0] == "--images":
        if len(argv) < 3:
            print("usage: scripts/lab-artifacts --images ARCHIVE REFERENCE...", file=sys.stderr)
            return 2
        archive, references = argv[1], argv[2:]
        os.makedirs(os.path.dirname(os.path.abspath(archive)), exist_ok=True)
        oci.write_archive(archive, references)
        print(archive)
        return 0
    if len(argv) > 1 or (argv and argv[0].startswith("-")):
        print("usage: scripts/lab-artifacts [OUTDIR] | --images ARCHIVE REFERENCE...", file=sys.stderr)
        return 2

    outdir = argv[0] if argv else "target/lab-artifacts"
    os.makedirs(outdir, exist_ok=True)
    for version in double_versions():
        path = os.path.join(outdir, "k0s-airgap-bundle-%s-amd64.tar" % version)
        oci.write_archive(path, versions.system_images(version))
        with open(path, "rb") as file:
            digest = hashlib.sha256(file.read()).hexdigest()
        print("%s  %s" % (digest, path))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

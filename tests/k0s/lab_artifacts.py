"""Writes the lab's artifacts: a k0s airgap bundle (an OCI archive with a tiny image for each
image `k0s airgap list-images` prints) for every k0s version that has a wrapper in bin/, or an
OCI archive of any images given on the command line.

The output is deterministic: the same input gives the same bytes, so bundle digests can be
pinned.
"""

import argparse
import hashlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from k0s_double import oci, versions  # noqa: E402

BIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bin")


def double_versions():
    return sorted(name[len("k0s-") :] for name in os.listdir(BIN) if name.startswith("k0s-v"))


def main():
    parser = argparse.ArgumentParser(prog="scripts/lab-artifacts", description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", nargs="?", default="target/lab-artifacts", help="output folder (default: target/lab-artifacts)")
    parser.add_argument("--images", metavar="ARCHIVE", help="write only this OCI archive, holding the images given as REFERENCE arguments")
    parser.add_argument("references", nargs="*", metavar="REFERENCE", help="image references for --images")
    arguments = parser.parse_args()

    if arguments.images:
        if not arguments.references:
            parser.error("--images needs at least one image reference")
        os.makedirs(os.path.dirname(os.path.abspath(arguments.images)), exist_ok=True)
        oci.write_archive(arguments.images, arguments.references)
        print(arguments.images)
        return 0
    if arguments.references:
        parser.error("image references are only accepted with --images")

    os.makedirs(arguments.outdir, exist_ok=True)
    for version in double_versions():
        path = os.path.join(arguments.outdir, "k0s-airgap-bundle-%s-amd64.tar" % version)
        oci.write_archive(path, versions.system_images(version))
        with open(path, "rb") as file:
            digest = hashlib.sha256(file.read()).hexdigest()
        print("%s  %s" % (digest, path))
    return 0


if __name__ == "__main__":
    sys.exit(main())

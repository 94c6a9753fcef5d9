"""A test double of the k0s command line for airlock's tests. Never shipped.

It follows the k0s CLI closely enough that airlock cannot tell it from real k0s through SSH, and
keeps the cluster's state in files: per host under the host's private paths, and cluster-wide in
a folder that every host of one lab shares. See ../README.md.
"""

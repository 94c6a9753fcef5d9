//! The library API other modules call: verified bundles, blob readers and OCI archives.

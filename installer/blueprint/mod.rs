//! The blueprint: the as-built record of a cluster, its compliance report, SBOM and audit log.

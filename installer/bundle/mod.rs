//! The offline bundle: an OCI image layout plus a signed `bundle.yaml` that pins every artifact.

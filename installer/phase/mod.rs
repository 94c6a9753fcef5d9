//! The ordered, named phases of `apply` and `upgrade`.

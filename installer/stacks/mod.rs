//! The add-on stacks: KubeVirt, the NVIDIA GPU Operator, observability, policy and tenants.

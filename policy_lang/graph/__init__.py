"""The compiled state machine of a policy and the proofs about it (placeholder facade)."""

"""The zoo index: one reviewed file listing published checkpoints."""

"""The student's side of the data: prompt/label encoding, per-token loss weights, the epoch
schedule (lr, shuffle, micro-batches) and packing."""

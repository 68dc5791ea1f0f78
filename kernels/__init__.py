"""The torch core of LSD: pure, device-agnostic functions over tensors; nodes call these."""

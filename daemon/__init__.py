"""LunaSAM3Daemon: the process-wide host of SAM3 models."""

"""The image's main process: the services it supervises and the exit code it gives."""

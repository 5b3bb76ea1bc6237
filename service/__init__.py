"""Code shared by the commands in scripts/, the UI, the tests and the container probe.

Not packed into the archive (that is handler/, which imports nothing from here).
"""

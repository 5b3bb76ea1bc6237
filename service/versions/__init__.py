"""Model versions side by side in one TorchServe: the store's versioned archives, the gate that compares a
candidate with the serving default through the served API, and deploy/promote/rollback/retire.

Torch-free (the UI's operator page reads the version record and the management API through it).
"""

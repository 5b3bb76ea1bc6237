"""Image-classification handler for TorchServe: plain functions plus thin TorchServe glue."""
